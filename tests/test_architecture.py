"""The package's shape: the server never loads the offline tools, no import circles, routes
do not import routes. Read from the source (AST) and from a fresh interpreter's sys.modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "service"
SERVER_PACKAGES = ("api", "serving", "imaging", "models")
ROUTE_MODULES = {"service.api.health", "service.api.methods", "service.api.metrics",
                 "service.api.models", "service.api.upscale"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``service.*`` module a file imports, at any depth of the file (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from service import offline` imports the subpackage.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "service" or name.startswith("service.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_server_loads_no_offline_module() -> None:
    probe = "import sys, service.app, service.__main__; print(sorted(m for m in sys.modules if m.startswith('service')))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert "service.serving.upscaler" in loaded  # the probe saw the server
    assert "service.offline" not in loaded
    for shim in ("service.train'", "service.evaluate'", "service.gain'"):
        assert shim not in loaded


def test_no_server_module_imports_the_offline_tools() -> None:
    offenders = {
        name: sorted(m for m in deps if m.startswith("service.offline"))
        for name, deps in graph().items()
        if name.split(".")[1:2] and name.split(".")[1] in SERVER_PACKAGES
        or name in ("service.app", "service.__main__", "service.config", "service.errors", "service.logs")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_there_is_no_import_circle() -> None:
    deps = graph()
    circles: list[list[str]] = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        if node in on_path:
            circles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        on_path.add(node)
        for nxt in sorted(deps.get(node, ())):
            # A package's __init__ is loaded by its submodules; edges into it are not circles
            # of meaning, and ours import nothing but the standard library.
            visit(nxt, path + [node], on_path, done)
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for start in sorted(deps):
        visit(start, [], set(), done)
    assert circles == []


def test_routes_do_not_import_routes() -> None:
    deps = graph()
    assert {name: sorted(deps[name] & ROUTE_MODULES) for name in ROUTE_MODULES if deps[name] & ROUTE_MODULES} == {}


def test_a_missing_train_extra_is_named_not_a_bare_import_error(tmp_path: Path) -> None:
    # A fresh interpreter where matplotlib cannot be found, as in the server image.
    probe = (
        "import sys, importlib.util as u; real = u.find_spec; "
        "u.find_spec = lambda n, *a: None if n == 'matplotlib' else real(n, *a); "
        "from service.offline.train import main; "
        # Zero steps into a temporary store: were the check missing, nothing would train.
        f"main(['--scale', '2', '--steps', '0', '--work-dir', r'{tmp_path}', '--model-store', r'{tmp_path}'])"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "pip install 'subpixel[train]'" in result.stderr
    assert "ImportError" not in result.stderr and "Traceback" not in result.stderr
