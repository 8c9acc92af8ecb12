"""``roost admin create EMAIL``: the first admin (later ones too) without the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from roost.auth.passwords import check_password_policy
from roost.components import open_components
from roost.errors import RoostError
from roost.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    if args.data_dir is not None:
        os.environ["ROOST_DATA_DIR"] = str(args.data_dir)
    return Settings()


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("roost: the passwords differ")
    return first


async def _create(settings: Settings, email: str, password: str) -> None:
    async with open_components(settings) as components:
        await components.accounts.create_admin(email, password)


def create(args: argparse.Namespace) -> int:
    password = _read_password()
    problem = check_password_policy(password)
    if problem:
        print(f"roost: {problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_create(_settings(args), args.email, password))
    except RoostError as exc:
        print(f"roost: {exc.detail}", file=sys.stderr)
        return 1
    print(f"admin {args.email} created; sign in with POST /api/auth/login")
    return 0
