"""The import layering of the project: data flows one way, schemas <- core <- (streams, services) <- cli and demo.

Checked on the source (every ``import``/``from`` statement, also those inside functions), so a cycle
cannot creep back in through a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("schemas", "services", "streams")


def _layer(module: str) -> str:
    """The layer a dotted module name belongs to."""
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1 and parts[1] in ("core", "cli", "demo"):
        return f"services.{parts[1]}"
    return parts[0]


# What each layer may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),
    "services.core": {"schemas"},
    "streams": {"schemas", "services.core"},
    "services": {"schemas", "services.core"},
    "services.cli": {"schemas", "services.core", "services", "streams", "services.demo"},
    "services.demo": {"schemas", "services.core", "services", "streams"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in OURS]


def _modules() -> list[Path]:
    return sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_respect_the_layers(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    layer = _layer(module)
    bad = [f"line {line}: {name} ({_layer(name)})" for line, name in _imports(path)
           if _layer(name) != layer and _layer(name) not in ALLOWED[layer]]
    assert not bad, f"{module} ({layer}) may import only {sorted(ALLOWED[layer])}; it imports " + "; ".join(bad)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from streams.app import app\n    import services.router.router\n")
    assert [name for _, name in _imports(bad)] == ["streams.app", "services.router.router"]
    assert _layer("services.router.router") == "services" and _layer("services.core.settings") == "services.core"
