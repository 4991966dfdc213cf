"""``clip_qkv`` (``attndsl/features/blocks/clip_qkv.py``): q, k, v clamped to [-c, c].

- The reference against transformers' OlmoAttention with ``clip_qkv`` in float64 (the
  ``Float64`` mode of ``test_feature_kernels.py``): max abs error <= 1e-12, with a limit
  that really clamps.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, lengths 1 and 7,
  batch 2, GQA, cross-attention, core mode, dense and block-sparse, the cache, the ort target
  (portable, explained); fuse-qkv stays exact, fold-scale skips the block.
- Both syntaxes, the round trip, ``attndsl check``, the error messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ErrorReport, check_against_reference, error_of, one_block, one_block_yaml

from attndsl import parse_spec
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl, write_yaml
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.passes.base import Program
from attndsl.passes.fold_scale import FoldScale
from attndsl.passes.fuse_qkv import FuseQKV
from attndsl.reference import run_reference
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize
from attndsl.weights import seeded_weights

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("clip_qkv max abs error:", width=52)
_report = ERRORS.fixture()

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _additive, _config, _inputs, _randomise, round_to_float32  # noqa: E402


@pytest.mark.parametrize("s", (1, 7, 33))
def test_olmo_clip_qkv(s):
    from transformers.models.olmo.modeling_olmo import OlmoAttention, OlmoConfig

    limit = 0.4
    cfg = _config(OlmoConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  clip_qkv=limit)
    m = OlmoAttention(cfg, 0)
    _randomise(m, 1)
    w = round_to_float32(m, "attn.")
    x, _, allowed = _inputs(s, 64, s)
    # the limit clamps: some projected values lie beyond it
    assert np.abs(x @ w["attn.q_proj.weight"].T).max() > 2 * limit
    ang = np.arange(s)[:, None] * (1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16))[None]
    emb = np.broadcast_to(np.concatenate([ang, ang], -1), (2, s, 16))
    pe = (torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                 attention_mask=_additive(allowed))[0].numpy()
    model = one_block(f"    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: true\n"
                      f"    clip_qkv: {limit}\n", d=64)
    got = run_reference(model, w, {"x": x})["y"]
    err = float(np.max(np.abs(got - want)))
    ERRORS.record("vs transformers OLMo", err)
    assert err <= 1e-12, err
    plain = one_block("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: true\n", d=64)
    assert not np.allclose(run_reference(plain, w, {"x": x})["y"], want)


# ------------------------------------------------------------------ ONNX Runtime vs reference

TOL = {"float32": 1e-5, "float16": 2e-2}
LIMIT = 0.25  # seeded projections of random inputs lie well beyond it


def _model(dtype: str = "float32", extra: str = "", mask: str = "causal", **kw):
    return one_block(f"    heads: 4\n    kv_heads: 2\n    mask: {mask}\n    rope: true\n"
                     f"    clip_qkv: {LIMIT}\n{extra}", dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(dtype, sparse):
    model = _model(dtype, "    bias: true\n", mask="causal & sliding(8)")
    options = CompileOptions(sparse=sparse, block_size=4)
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], options=options,
                                      where=f"{dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype}", err)


def test_cache_prefill_then_steps_equals_full_run():
    model = _model(extra="    cache: true\n")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    errors = max_errors(model, decode_loop(model, compile_model(model), inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    ERRORS.record("ORT float32 with cache", check_against_reference(model, feed, 1e-5))


def test_cross_attention():
    model = one_block(f"    key_value: m\n    heads: 4\n    kv_heads: 1\n    clip_qkv: {LIMIT}\n",
                      dims="  mem: dynamic", inputs="  m: [batch, mem, d]")
    feed = random_inputs(model, {"batch": 2, "seq": 3, "mem": 7}, seed=1)
    ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_core_mode_clamps_the_streams():
    model = one_block("    project: false\n    heads: 4\n    mask: causal\n    clip_qkv: 0.5\n")
    assert model.weight_shapes() == {}
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    ERRORS.record("ORT float32 core mode", check_against_reference(model, feed, 1e-5))
    x = feed["x"].astype(np.float64)
    plain = one_block("    project: false\n    heads: 4\n    mask: causal\n")
    want = run_reference(plain, {}, {"x": np.clip(x, -0.5, 0.5)})["y"]
    assert np.allclose(run_reference(model, {}, {"x": x})["y"], want, atol=1e-15)


def test_fuse_qkv_is_exact_and_fold_scale_skips():
    model = _model()
    w = seeded_weights(model)
    fused = FuseQKV().run(Program(model, w)).program
    assert fused.model.block("attn").fused_qkv
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    want = run_reference(model, w, feed)["y"]
    assert np.max(np.abs(run_reference(fused.model, fused.weights, feed)["y"] - want)) < 1e-15
    folded = FoldScale().run(Program(model, w))
    assert not folded.changed and folded.program.model.block("attn").scale == 1 / np.sqrt(8)


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model(extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel clamps q, k and v (clip_qkv)" in explain[0].reason
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


# ------------------------------------------------------------------ IR, syntax, check


def test_ir_text_and_shorthand():
    assert "    clip_qkv limit=0.25\n" in print_ir(_model())
    assert one_block("    heads: 4\n    clip_qkv: 8\n").block("attn").feature(
        "clip_qkv").limit == 8.0


@pytest.mark.parametrize("value", ["8.0", "{limit: 0.5}", "3"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    clip_qkv: {value}\n")
    spec = parse_source(Source(text, "t.yaml"))
    dsl = write_dsl(spec)
    assert "clip_qkv" in dsl
    back = parse_source(Source(dsl, "t.attn"))
    assert back == spec
    assert parse_source(Source(write_yaml(back), "t.yaml")) == spec
    assert parse_spec(dsl, "t.attn") == parse_spec(text, "t.yaml")


def test_example_spec_and_check():
    model = parse_spec((ROOT / "specs" / "clip_qkv_olmo.attn").read_text(), "c.attn")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    clip_qkv q, k, v clamped to [-8, 8]" in report
    assert "16,384 parameters" in report  # no weights of its own


# ------------------------------------------------------------------ errors


def _text(value: str, extra: str = "") -> str:
    return one_block_yaml(f"    heads: 4\n{extra}    clip_qkv: {value}\n")


def _where(err, text: str, needle: str) -> None:
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
    line = text.splitlines()[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(needle), (line, err.span)


@pytest.mark.parametrize("value,message,at", [
    ("true", "clip_qkv needs a limit", "clip_qkv"),
    ("-1.0", "clip_qkv limit must be a positive number", "-1.0"),
    ("0", "clip_qkv limit must be a positive number", "0"),
    ("{lim: 2}", "unknown clip_qkv key 'lim'", "lim"),
    ("abc", "clip_qkv must be a mapping like {limit: 8.0}", "abc"),
])
def test_errors(value, message, at):
    text = _text(value)
    err = error_of(text, "s.yaml")
    assert message in str(err)
    _where(err, text, at)
