"""Dependencies point down: a module may import only from its own layer or below."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import roost

ROOT = Path(roost.__file__).parent

# Lower number = lower layer. A module may import from layers with a number <= its own.
LAYERS = {
    "query": 0,
    "backends": 0,
    "errors": 0,
    "ids": 0,
    "types": 0,
    "settings": 0,
    "logs": 0,
    "storage": 1,
    "mail": 1,
    "ratelimit": 1,
    "broker": 1,
    "cache": 1,
    "auth": 2,
    "records": 2,
    "realtime": 3,
    "components": 4,
    "metrics": 4,
    "tracing": 4,
    "http": 5,
    "cli": 6,
    "__main__": 6,
    "__init__": 0,
}
FRAMEWORKS = ("starlette", "granian")


def _layer_of(module: str) -> str:
    return module.split(".")[1] if module.startswith("roost.") else module


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        found.append((".".join(("roost", *relative.parts)), path))
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_module_has_a_layer() -> None:
    for module, _ in _modules():
        assert _layer_of(module) in LAYERS, module


def test_imports_point_down() -> None:
    wrong = []
    for module, path in _modules():
        own = LAYERS[_layer_of(module)]
        for imported in _imports(path):
            if imported == "roost" or not imported.startswith("roost."):
                continue
            target = _layer_of(imported)
            if LAYERS[target] > own and target != _layer_of(module):
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_query_imports_nothing_else_from_roost() -> None:
    for module, path in _modules():
        if _layer_of(module) == "query":
            others = [
                i
                for i in _imports(path)
                if i.startswith("roost.") and not i.startswith("roost.query")
            ]
            assert others == [], module


def test_only_http_and_cli_import_the_web_framework() -> None:
    for module, path in _modules():
        if _layer_of(module) in ("http", "cli"):
            continue
        used = [i for i in _imports(path) if i.split(".")[0] in FRAMEWORKS]
        assert used == [], f"{module} imports {used}"


def test_the_embedded_default_needs_no_optional_extra() -> None:
    """``pip install roost`` without ``[postgres]`` or ``[redis]`` must serve on SQLite:
    backends load their driver only when a URL names them."""
    blocked = "import sys; sys.modules.update(asyncpg=None, redis=None)"
    modules = "roost.cli.main, roost.http.app, roost.components, roost.storage.sqlite"
    subprocess.run([sys.executable, "-c", f"{blocked}; import {modules}"], check=True, timeout=60)
