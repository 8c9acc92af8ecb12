"""``roost admin create`` and ``roost admin token``."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from roost.auth import admins
from roost.auth.passwords import check_password_policy
from roost.errors import RoostError
from roost.settings import Settings
from roost.storage.base import Storage, open_storage

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> Settings:
    if args.data_dir is not None:
        os.environ["ROOST_DATA_DIR"] = str(args.data_dir)
    return Settings()


async def _with_storage(settings: Settings, action: Callable[[Storage], Awaitable[T]]) -> T:
    storage = open_storage(settings)
    try:
        await storage.open()
        return await action(storage)
    finally:
        await storage.aclose()


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("roost: the passwords differ")
    return first


def create(args: argparse.Namespace) -> int:
    password = _read_password()
    problem = check_password_policy(password)
    if problem:
        print(f"roost: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            _with_storage(_settings(args), lambda s: admins.create_admin(s, args.email, password))
        )
    except RoostError as exc:
        print(f"roost: {exc.detail}", file=sys.stderr)
        return 1
    print(f"admin {args.email} created; get an API token with: roost admin token {args.email}")
    return 0


def token(args: argparse.Namespace) -> int:
    try:
        value = asyncio.run(
            _with_storage(_settings(args), lambda s: admins.create_token(s, args.email, args.name))
        )
    except RoostError as exc:
        print(f"roost: {exc.detail}", file=sys.stderr)
        return 1
    print(value)
    return 0
