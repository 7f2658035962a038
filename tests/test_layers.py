"""The package's layers import only downward (ARCHITECTURE.md).

robots <- envs <- agents <- sim2real, and the shared modules (config, cli, control, data,
policy_bundle) that any layer may import import no layer above robots. Checked on the
source with `ast` (every import, including the lazy ones inside functions), so a cycle is
caught before it is ever executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = ("robots", "envs", "agents", "sim2real")
# shared modules and the layers each may import (besides the other shared modules)
SHARED = {"config": (), "cli": (), "control": (), "data": (), "policy_bundle": ("robots",)}
APPLICATION = {"__init__", "__main__", "demo"}  # the top: the CLI entry and the demo may import anything
SKIP_DIRS = {"tests", "benchmarks", "examples", "launch", "docs", ".venv", "outputs", "runs"}


def top_level_part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def roboreal_imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, first component under roboreal) of every roboreal import in `path`."""
    rel = path.relative_to(root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:  # relative: resolve against the package
            package = list(rel.parts[:-1])[: len(rel.parts) - node.level]
            module = (node.module or "").split(".") if node.module else [a.name for a in node.names][:1]
            names = [".".join(["roboreal", *package, *module])]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names] if base == "roboreal" else [base]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "roboreal" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def allowed(source: str, target: str) -> bool:
    if source == target or source in APPLICATION or target in SHARED:
        return True
    if source in SHARED:
        return target in SHARED[source]
    if source in LAYERS and target in LAYERS:
        return LAYERS.index(target) < LAYERS.index(source)
    return False


def package_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not (set(p.relative_to(ROOT).parts[:-1]) & SKIP_DIRS)
                  and not p.relative_to(ROOT).parts[0].endswith(".egg-info"))


def test_every_top_level_part_is_placed():
    parts = {top_level_part(p) for p in package_files()}
    unplaced = parts - set(LAYERS) - set(SHARED) - APPLICATION
    assert not unplaced, f"place these in LAYERS or SHARED (and ARCHITECTURE.md): {sorted(unplaced)}"


def test_layers_import_only_downward():
    upward = []
    for path in package_files():
        source = top_level_part(path)
        for line, target in roboreal_imports(path):
            if not allowed(source, target):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {source} imports {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


@pytest.mark.parametrize("source,target,ok", [
    ("envs", "robots", True), ("agents", "envs", True), ("sim2real", "agents", True),
    ("envs", "agents", False), ("agents", "sim2real", False), ("robots", "envs", False),
    ("data", "envs", False), ("policy_bundle", "robots", True), ("control", "sim2real", False),
    ("agents", "data", True), ("demo", "sim2real", True),
])
def test_the_rule_itself(source, target, ok):
    assert allowed(source, target) is ok


def test_the_scan_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "envs").mkdir()
    f = tmp_path / "envs" / "x.py"
    f.write_text("def f():\n    from roboreal.agents import ppo\n\nfrom ..sim2real import bundle\nimport roboreal.robots.spec\n")
    assert sorted(t for _, t in roboreal_imports(f, root=tmp_path)) == ["agents", "robots", "sim2real"]


def test_every_package_is_in_pyproject():
    """pyproject's `packages` list is explicit (the repository root is the package): a
    subpackage missing from it is left out of a normal install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(["roboreal", *p.parent.relative_to(ROOT).parts]) for p in package_files() if p.name == "__init__.py"}
    assert found - listed == set(), f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed in pyproject.toml but not packages: {sorted(listed - found)}"
