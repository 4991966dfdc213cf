"""Every shipped example and spec compiles, passes the ONNX checker, runs in ONNX Runtime and
matches the numpy reference at two sizes; each example's YAML and .attn give equal IR."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from helpers import check_against_reference

import attndsl
from attndsl.inputs import random_inputs
from attndsl.lower.compile import compile_model
from attndsl.runtime import make_session
from attndsl.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.yaml"))
SPECS = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    p for p in (ROOT / "specs").iterdir() if p.suffix in (".yaml", ".attn"))

# (sizes of dynamic dims, past_len): a small case and a ragged larger one
SIZES = [({"batch": 1, "seq": 5, "src_len": 6, "tgt_len": 4}, 2),
         ({"batch": 3, "seq": 37, "src_len": 29, "tgt_len": 23}, 5)]
TOL = 1e-4


def test_example_set():
    assert EXAMPLES == ["alibi_12_heads", "bert_encoder", "encoder_decoder",
                        "gemma2_local_global", "gpt2_causal", "mistral_block"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_yaml_and_dsl_give_equal_ir(name):
    a = attndsl.load_spec(ROOT / "examples" / f"{name}.yaml")
    b = attndsl.load_spec(ROOT / "examples" / f"{name}.attn")
    assert a == b
    assert attndsl.print_ir(a) == attndsl.print_ir(b)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compiles_runs_and_matches_reference(path):
    model = attndsl.load_spec(path)
    weights = load_weights(model)
    proto = compile_model(model, weights)
    onnx.checker.check_model(proto, full_check=True)
    dynamic = {d.name for d in model.dims if d.size is None}
    assert dynamic >= {"batch"}, "examples keep batch (and sequence lengths) dynamic"
    session = make_session(proto, provider="cpu")
    for sizes, past_len in SIZES:
        inputs = random_inputs(model, {k: v for k, v in sizes.items() if k in dynamic}, seed=5,
                               past_len=past_len)
        check_against_reference(model, inputs, TOL, session=session, weights=weights,
                                where=f"at {sizes}, past {past_len}")
