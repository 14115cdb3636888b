"""The architecture as a test: the import-linter contract of pyproject.toml holds, and no import
(function-level ones included) closes a circle between modules or between bench's parts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

BIN = Path(sys.executable).parent


def _graph():
    return grimp.build_graph("bench")


def _parts(graph) -> list[str]:
    """bench's direct children: subpackages and top-level modules."""
    return sorted({".".join(m.split(".")[:2]) for m in graph.modules if m.count(".") >= 1})


def test_no_module_imports_itself_through_another():
    graph = _graph()
    circles = [
        (m, imp)
        for m in sorted(graph.modules)
        for imp in graph.find_modules_directly_imported_by(m)
        if graph.chain_exists(importer=imp, imported=m)
    ]
    assert not circles, f"import circles (module, the import that closes it): {circles[:10]}"


def test_no_part_of_bench_imports_itself_through_another():
    graph = _graph()
    parts = _parts(graph)
    circles = []
    for a in parts:
        for b in parts:
            if a < b and graph.chain_exists(a, b, as_packages=True):
                if graph.chain_exists(b, a, as_packages=True):
                    circles.append((a, b))
    assert not circles, f"parts that import each other: {circles}"


def test_the_layer_contract_holds():
    exe = BIN / "lint-imports"
    if not exe.exists():
        exe = shutil.which("lint-imports")
    proc = subprocess.run(
        [str(exe)], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


def test_a_circle_would_be_caught(tmp_path, monkeypatch):
    # the check itself can fail: a lower layer importing a higher one breaks the contract
    graph = _graph()
    graph.add_import(importer="bench.metrics", imported="bench.report")
    assert graph.chain_exists(importer="bench.report", imported="bench.metrics")
    assert graph.chain_exists(importer="bench.metrics", imported="bench.report")


def test_no_function_over_80_lines_and_no_module_over_600():
    """The size budget of the code's shape (docs/design.md): small modules, short functions."""
    import ast

    root = Path(__file__).resolve().parents[1] / "bench"
    too_long = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 600:
            too_long.append(f"{path.relative_to(root)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    too_long.append(f"{path.relative_to(root)}:{node.name}: {n} lines")
    assert not too_long, too_long
