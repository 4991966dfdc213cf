"""Property test: random valid specs (every feature class) lower to ONNX that ONNX Runtime
runs to the reference interpreter's numbers, at random sizes and past lengths."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from strategies import spec_yaml

from attndsl.api import parse_spec
from attndsl.inputs import random_inputs
from attndsl.lower.compile import compile_model
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights


@given(text=spec_yaml(), batch=st.integers(1, 3), seq=st.integers(1, 9),
       past=st.integers(0, 4), seed=st.integers(0, 3))
def test_random_specs_match_reference(text, batch, seq, past, seed):
    check(text, {"batch": batch, "seq": seq}, past, seed)


@given(text=spec_yaml(fixed_lengths=True), batch=st.integers(1, 2), seed=st.integers(0, 3))
def test_random_specs_fixed_lengths(text, batch, seed):
    check(text, {"batch": batch}, 0, seed)


def check(text: str, sizes: dict[str, int], past: int, seed: int) -> None:
    model = parse_spec(text, "random.yaml")
    weights = load_weights(model)
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    got = run_session(make_session(compile_model(model, weights)), feed)
    want = run_reference(model, weights, feed)
    assert list(got) == list(want)
    for name, ref in want.items():
        assert not np.isnan(got[name]).any(), name
        np.testing.assert_allclose(got[name], ref, atol=2e-5, err_msg=f"{name}\n{text}")
