"""``roost``: serve, manage admins, move data between backends, print the version."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from roost import __version__
from roost.cli import admin, serve, transfer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roost", description="A backend for mobile apps.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="start the HTTP server")
    serve_cmd.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port to bind (default 8090)")
    serve_cmd.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve_cmd.add_argument(
        "--role",
        choices=["all", "api", "realtime", "worker"],
        help="what this instance does: the HTTP API, the realtime gateways, the background"
        " jobs (mail, pruning, clean-up), or all of them (default all)",
    )
    _data_dir(serve_cmd)
    serve_cmd.set_defaults(handler=serve.run)

    admin_cmd = commands.add_parser("admin", help="manage admin accounts")
    admin_commands = admin_cmd.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser(
        "create", help="create an admin (password from the prompt, or one line of stdin)"
    )
    create.add_argument("email")
    _data_dir(create)
    create.set_defaults(handler=admin.create)

    export = commands.add_parser(
        "export", help="write the database as JSON lines (holds password hashes: keep it safe)"
    )
    export.add_argument(
        "--output", default="-", help="file to write, mode 0600 (default -: standard output)"
    )
    _data_dir(export)
    export.set_defaults(handler=transfer.export)

    import_cmd = commands.add_parser(
        "import", help="load an export into a new, empty database (all or nothing)"
    )
    import_cmd.add_argument("--input", default="-", help="file to read (default -: standard input)")
    _data_dir(import_cmd)
    import_cmd.set_defaults(handler=transfer.import_)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=lambda args: print(__version__) or 0)
    return parser


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data folder (default ./roost_data)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
    except ValidationError as exc:
        print(f"roost: invalid settings:\n{describe(exc)}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # a list or table variable that is not JSON
        print(f"roost: invalid settings: {exc} (lists and tables are JSON)", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"roost: the configuration file is not valid TOML: {exc}", file=sys.stderr)
        return 2
    return result


def describe(exc: ValidationError) -> str:
    """Each problem on its own line, naming the setting but never echoing the value given:
    pydantic's own text quotes it, and a refused secret key is still a secret."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        lines.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)
