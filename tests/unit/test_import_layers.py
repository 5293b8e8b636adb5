"""Imports run one way: the library never imports the benchmarks (evaluation) or the command line (cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rerank_plugins"
# What only the command line and the benchmarks may import.
UPPER = ("rerank_plugins.evaluation", "rerank_plugins.cli")


def _library_files() -> list[Path]:
    files = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("evaluation", "cli.py")]
    for adapter in (ROOT / "integrations").glob("*/"):
        files += [p for p in adapter.rglob("*.py") if "tests" not in p.relative_to(adapter).parts]
    return sorted(files)


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_scan_sees_every_library_layer() -> None:
    seen = {p.relative_to(ROOT).parts[1] for p in _library_files() if p.is_relative_to(PACKAGE)}
    assert {"scoring", "rerankers", "retrieval", "decomposition", "types.py", "registry.py"} <= seen
    assert not seen & {"evaluation", "cli.py"}


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_module_imports_neither_evaluation_nor_cli(path: Path) -> None:
    upward = sorted(n for n in _imported(path) if any(n == u or n.startswith(u + ".") for u in UPPER))
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}: benchmarks and the CLI sit above the library"
