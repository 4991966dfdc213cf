"""Golden IR prints: tests/golden/<name>.yaml -> tests/golden/<name>.ir.

Rewrite the .ir files after an intended change with ``ATTNDSL_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attndsl import parse_spec, print_ir
from attndsl.convert import convert_text

GOLDEN = Path(__file__).resolve().parent / "golden"
SPECS = sorted(GOLDEN.glob("*.yaml"))
UPDATE = os.environ.get("ATTNDSL_UPDATE_GOLDEN") == "1"


def ir_text(path: Path) -> str:
    # a bare file name: printed paths (weights) do not depend on where the checkout is
    return print_ir(parse_spec(path.read_text(encoding="utf-8"), path.name))


def test_there_are_golden_specs() -> None:
    assert len(SPECS) >= 5


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_golden_ir(spec: Path) -> None:
    got = ir_text(spec)
    expected_path = spec.with_suffix(".ir")
    if UPDATE:
        expected_path.write_text(got, encoding="utf-8")
    assert expected_path.exists(), f"no {expected_path.name}; run with ATTNDSL_UPDATE_GOLDEN=1"
    assert got == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_golden_ir_is_the_same_from_the_dsl(spec: Path) -> None:
    text = spec.read_text(encoding="utf-8")
    dsl = convert_text(text, spec.name, "dsl")
    assert print_ir(parse_spec(dsl, spec.with_suffix(".attn").name)) == ir_text(spec)


def test_golden_prints_are_deterministic() -> None:
    for spec in SPECS:
        assert ir_text(spec) == ir_text(spec)
