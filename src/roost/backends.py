"""Backends chosen by URL scheme, imported only once chosen (a missing extra fails then)."""

from __future__ import annotations

import importlib
from typing import Any


def load_backend(target: str) -> Any:
    """The class named by ``"package.module:Class"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class MissingDependency(ImportError):
    """A backend needs a package that is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this backend needs the {package!r} package: pip install 'roost[{extra}]'"
        )
        self.package = package
        self.extra = extra
