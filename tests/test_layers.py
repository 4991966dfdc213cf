"""The import contracts of pyproject.toml (``[tool.importlinter]``): the layers import
downward only, and only ``lower/``, ``runtime/``, ``api`` and ``cli`` import onnx or
onnxruntime. ``lint-imports`` runs on this checkout; a broken contract fails with its report.
Also: the tables the command line reads (targets, opsets, sparse strategies, passes) agree
with the code they describe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attndsl import cli
from attndsl.lower import targets
from attndsl.lower.graph_passes import GRAPH_PASSES
from attndsl.lower.lowering import LOWERINGS
from attndsl.lower.onnx_portable import PortableLowering
from attndsl.lower.pipeline import DEFAULT_PIPELINE, REGISTRY, get_pass
from attndsl.passes import IR_PASSES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def lint_imports_command() -> list[str]:
    """``lint-imports`` of the interpreter running the tests (the ``test`` extra)."""
    here = Path(sys.executable).parent / ("lint-imports" + (".exe" if os.name == "nt" else ""))
    found = str(here) if here.exists() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    return [found, "--no-cache"]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run the contracts of ``root/pyproject.toml`` on the ``attndsl`` package in ``root``
    (lint-imports puts its working directory first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(lint_imports_command(), cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0, f"import contracts broken:\n{r.stdout}\n{r.stderr}"
    assert "0 broken" in r.stdout
    assert f"{len(contracts())} kept" in r.stdout


def test_a_broken_contract_fails_with_the_offending_import(tmp_path):
    """The check can fail: an onnx import inside a function of an IR pass is found."""
    shutil.copytree(ROOT / "attndsl", tmp_path / "attndsl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "attndsl" / "passes" / "base.py"
    base.write_text(base.read_text() + "\n\ndef _lazy():\n    import onnx\n\n    return onnx\n")
    r = lint_imports(tmp_path)
    assert r.returncode != 0
    assert "only lower/, runtime/, api and cli know ONNX BROKEN" in r.stdout
    assert "attndsl.passes.base -> onnx" in r.stdout


def test_contracts_ignore_nothing_and_place_every_module():
    for contract in contracts():
        assert "ignore_imports" not in contract, contract["name"]
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    assert layers["exhaustive"] is True and layers["containers"] == ["attndsl"]
    placed = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    modules = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "attndsl").iterdir()
               if p.name != "__init__.py" and not p.name.startswith((".", "__pycache__"))
               and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert placed == modules


def test_every_target_has_a_lowering_class():
    assert set(LOWERINGS) == set(targets.TARGETS) == set(targets.TARGET_NAMES)
    for name, cls in LOWERINGS.items():
        assert issubclass(cls, PortableLowering), name
    assert targets.DEFAULT_TARGET in targets.TARGETS
    assert targets.DEFAULT_OPSET in targets.TARGETS[targets.DEFAULT_TARGET].opsets
    assert targets.DEFAULT_SPARSE in targets.SPARSE_MODES


def test_the_command_line_reads_the_target_table():
    parser = cli.build_parser()
    compile_cmd = parser._subparsers._group_actions[0].choices["compile"]
    flags = {a.dest: a for a in compile_cmd._actions}
    assert tuple(flags["target"].choices) == targets.TARGET_NAMES
    assert tuple(flags["sparse"].choices) == targets.SPARSE_MODES
    assert tuple(flags["opset"].choices) == targets.OPSETS
    assert flags["opset"].default == targets.DEFAULT_OPSET
    assert "17..21 portable, 17..24 ort" in flags["opset"].help


def test_pipeline_names_both_stages_in_order():
    """IR passes first, then graph passes; every default pass is registered once."""
    stages = [get_pass(name).stage for name in DEFAULT_PIPELINE]
    assert stages == sorted(stages, key=["ir", "graph"].index)
    assert len(set(DEFAULT_PIPELINE)) == len(DEFAULT_PIPELINE)
    assert {cls.stage for cls in IR_PASSES.values()} == {"ir"}
    assert {cls.stage for cls in GRAPH_PASSES.values()} == {"graph"}
    assert not IR_PASSES.keys() & GRAPH_PASSES.keys()
    assert REGISTRY == {**IR_PASSES, **GRAPH_PASSES}
