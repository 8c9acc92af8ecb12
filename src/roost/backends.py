"""Backends chosen by URL scheme, imported only once chosen (a missing extra fails then)."""

from __future__ import annotations

import importlib
from typing import Any


def load_backend(target: str) -> Any:
    """The class named by ``"package.module:Class"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
