"""Property test: random valid specs (every feature class) lower to ONNX that ONNX Runtime
runs to the reference interpreter's numbers, at random sizes and past lengths."""

from __future__ import annotations

from helpers import check_against_reference
from hypothesis import given
from hypothesis import strategies as st
from strategies import spec_yaml

from attndsl.api import parse_spec
from attndsl.inputs import random_inputs


@given(text=spec_yaml(), batch=st.integers(1, 3), seq=st.integers(1, 9),
       past=st.integers(0, 4), seed=st.integers(0, 3))
def test_random_specs_match_reference(text, batch, seq, past, seed):
    check(text, {"batch": batch, "seq": seq}, past, seed)


@given(text=spec_yaml(fixed_lengths=True), batch=st.integers(1, 2), seed=st.integers(0, 3))
def test_random_specs_fixed_lengths(text, batch, seed):
    check(text, {"batch": batch}, 0, seed)


def check(text: str, sizes: dict[str, int], past: int, seed: int) -> None:
    model = parse_spec(text, "random.yaml")
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    check_against_reference(model, feed, 2e-5, where=text)
