"""Imports run one way: the composition roots (serve_app/app.py, the Serve application;
serve_app/cli.py, the command) may import everything; the deployments import only the
kernel of serve_app; the kernel imports neither side."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = "serve_app/app.py"
ENTRY_POINT = "serve_app/cli.py"  # the command: the model store lives in the deployments


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def modules(package: str) -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): imported_modules(path)
            for path in sorted((ROOT / package).rglob("*.py"))}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_only_the_composition_root_imports_the_deployments() -> None:
    http_side = {name: found for name, found in modules("serve_app").items()
                 if name not in (COMPOSITION_ROOT, ENTRY_POINT)}
    assert len(http_side) > 10
    offenders = {name: sorted(m for m in found if within(m, "deployments"))
                 for name, found in http_side.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
    assert any(within(m, "deployments") for m in modules("serve_app")[COMPOSITION_ROOT])


def test_deployments_import_only_the_kernel_of_serve_app() -> None:
    found = modules("deployments")
    assert len(found) > 20
    offenders = {name: sorted(m for m in imports if within(m, "serve_app")
                              and m != "serve_app" and not within(m, "serve_app.kernel"))
                 for name, imports in found.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
    assert sum(any(within(m, "serve_app.kernel") for m in imports)
               for imports in found.values()) > 10


def test_the_kernel_imports_neither_side() -> None:
    found = modules("serve_app/kernel")
    assert len(found) >= 8
    offenders = {name: sorted(m for m in imports if within(m, "deployments") or (
        within(m, "serve_app") and m != "serve_app" and not within(m, "serve_app.kernel")))
        for name, imports in found.items()}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
