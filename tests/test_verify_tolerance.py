"""``verify``'s tolerance scales with the reference's magnitude: an output around 1e9 (here a
Gemma-style QK-norm with a weight offset of 1e9, found by tools/fuzz.py) is only known to
about 1e2 in float32, so a fixed 1e-4 alone failed a correct model; a real error still
fails, NaN never passes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from attndsl import api

ROOT = Path(__file__).resolve().parents[1]


def _huge_keys() -> api.RunResult:
    text = (ROOT / "specs" / "output_gate_qwen3_next.yaml").read_text()
    assert "qk_norm: {offset: 1.0}" in text
    spec = api.parse_spec(text.replace("qk_norm: {offset: 1.0}", "qk_norm: {offset: 1e9}"),
                          "huge.yaml")
    return api.execute(spec, sizes={"batch": 3, "seq": 9}, past_len=1, seed=5)


def test_large_outputs_pass_within_the_relative_tolerance() -> None:
    result = _huge_keys()
    report = api.compare(result)
    errors = report.max_errors
    assert errors["attn.present_key"] > 1.0  # float32 rounding at magnitude 1e9
    assert report.passed and report.relative_tolerance == api.RELATIVE_TOLERANCE["float32"]
    assert not api.compare(result, relative_tolerance=0.0).passed  # what failed before


def test_real_errors_and_nan_still_fail() -> None:
    result = _huge_keys()
    key = result.outputs["attn.present_key"]
    off = dataclasses.replace(result, outputs={**result.outputs,
                                               "attn.present_key": key * (1 + 1e-3)})
    assert api.compare(off).failed == ("attn.present_key",)
    y = result.outputs["y"].copy()
    y.flat[0] = np.nan
    assert "y" in api.compare(dataclasses.replace(result, outputs={**result.outputs,
                                                                   "y": y})).failed
