"""Per-projection bias (``bias: {q: ..., k: ..., v: ..., o: ...}``,
``attndsl/features/blocks/bias.py``).

- The reference against transformers' Qwen2Attention (biases on q, k, v; none on o) and
  WhisperAttention (none on k), self- and cross-attention, run in float64 (the ``Float64``
  mode of ``test_feature_kernels.py``): max abs error <= 1e-12.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, lengths 1 and 7,
  batch 2, GQA, dense and block-sparse, the cache, the ort target (fused kernels kept).
- fuse-qkv (zeros for the missing rows) and fold-scale stay exact; ``bias: true`` unchanged.
- Both syntaxes, the round trip, ``attndsl check``, the error messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ErrorReport,
    assert_round_trips,
    check_against_reference,
    error_of,
    one_block,
    one_block_yaml,
)

from attndsl import parse_spec
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl
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
ERRORS = ErrorReport("bias max abs error:", width=52)
_report = ERRORS.fixture()

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _additive, _config, _inputs, _randomise, round_to_float32  # noqa: E402

S_LENS = (1, 7, 33)



def _record(name: str, got: np.ndarray, want: np.ndarray) -> None:
    err = float(np.max(np.abs(got - want)))
    ERRORS.record(name, err)
    assert err <= 1e-12, err


# ------------------------------------------------------------------ against transformers


@pytest.mark.parametrize("s", S_LENS)
def test_qwen2_q_k_v_bias(s):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, Qwen2Config

    cfg = _config(Qwen2Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    m = Qwen2Attention(cfg, 0)
    _randomise(m, 1)
    w = round_to_float32(m)
    assert "o_proj.bias" not in w and w["k_proj.bias"].shape == (32,)
    x, _, allowed = _inputs(s, 64, s)
    ang = np.arange(s)[:, None] * (1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16))[None]
    emb = np.broadcast_to(np.concatenate([ang, ang], -1), (2, s, 16))
    pe = (torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                 attention_mask=_additive(allowed))[0].numpy()
    model = one_block("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: true\n"
                      "    bias: {q: true, k: true, v: true}\n", d=64)
    got = run_reference(model, {f"attn.{k}": v for k, v in w.items()}, {"x": x})["y"]
    _record("vs transformers Qwen2 (q, k, v)", got, want)


def _whisper(seed: int):
    from transformers.models.whisper.modeling_whisper import WhisperAttention, WhisperConfig

    cfg = _config(WhisperConfig, d_model=64, encoder_attention_heads=4)
    m = WhisperAttention(64, 4, config=cfg)
    _randomise(m, seed)
    w = {k.replace("out_proj", "o_proj"): v for k, v in round_to_float32(m).items()}
    assert "k_proj.bias" not in w and w["o_proj.bias"].shape == (64,)
    return m, {f"attn.{k}": v for k, v in w.items()}


@pytest.mark.parametrize("s", S_LENS)
def test_whisper_self_attention_no_k_bias(s):
    m, w = _whisper(2)
    x = np.random.default_rng(s).standard_normal((2, s, 64))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x))[0].numpy()
    model = one_block("    heads: 4\n    bias: {q: true, v: true, o: true}\n", d=64)
    _record("vs transformers Whisper self", run_reference(model, w, {"x": x})["y"], want)


@pytest.mark.parametrize("s", S_LENS)
def test_whisper_cross_attention_no_k_bias(s):
    m, w = _whisper(3)
    rng = np.random.default_rng(s)
    x, mem = rng.standard_normal((2, s, 64)), rng.standard_normal((2, 5, 64))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x),
                 key_value_states=torch.from_numpy(mem))[0].numpy()
    model = one_block("    key_value: m\n    heads: 4\n    bias: {q: true, v: true, o: true}\n",
                      d=64, dims="  mem: dynamic", inputs="  m: [batch, mem, d]")
    got = run_reference(model, w, {"x": x, "m": mem})["y"]
    _record("vs transformers Whisper cross", got, want)


# ------------------------------------------------------------------ ONNX Runtime vs reference

VARIANTS = {"qkv": "{q: true, k: true, v: true}", "qvo": "{q: true, v: true, o: true}",
            "k": "{k: true}", "o": "{o: true}"}
TOL = {"float32": 1e-5, "float16": 2e-2}


def _model(variant: str, dtype: str = "float32", extra: str = "", mask: str = "causal"):
    return one_block(f"    heads: 4\n    kv_heads: 2\n    mask: {mask}\n    rope: true\n"
                     f"    bias: {VARIANTS[variant]}\n{extra}", dtype=dtype)


def _nonzero_biases(model) -> dict[str, np.ndarray]:
    """Seeded weights with biases far from zero, so a bias on the wrong rows shows."""
    w = dict(seeded_weights(model))
    rng = np.random.default_rng(7)
    for k in w:
        if k.endswith(".bias"):
            w[k] = (1.0 + rng.standard_normal(w[k].shape)).astype(np.float32)
    return w


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(variant, dtype, sparse):
    model = _model(variant, dtype, mask="causal & sliding(8)")
    options = CompileOptions(sparse=sparse, block_size=4)
    w = _nonzero_biases(model)
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], options=options, weights=w,
                                      where=f"{variant} {dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype} {variant}", err)


def test_cache_prefill_then_steps_equals_full_run():
    model = _model("qvo", extra="    cache: true\n")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    proto = compile_model(model, _nonzero_biases(model))
    errors = max_errors(model, decode_loop(model, proto, inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    err = check_against_reference(model, feed, 1e-5, weights=_nonzero_biases(model))
    ERRORS.record("ORT float32 with cache", err)


@pytest.mark.parametrize("variant", ["qkv", "k"])
def test_ort_target_keeps_the_fused_kernel(variant):
    model = _model(variant, extra="    cache: true\n")
    w = _nonzero_biases(model)
    options = CompileOptions(target="ort", sparse="dense")  # the fused kernel, not the pick
    _, explain = compile_with_explanations(model, w, options)
    assert explain[0].lowering == "com.microsoft.GroupQueryAttention", explain
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    err = check_against_reference(model, feed, 1e-5, weights=w, options=options)
    ERRORS.record("ORT target (GQA) float32", err)


def test_fuse_qkv_pads_the_missing_bias_rows_with_zeros():
    model = _model("qvo", mask="causal")
    w = _nonzero_biases(model)
    fused = FuseQKV().run(Program(model, w)).program
    b = fused.model.block("attn")
    assert b.fused_qkv and b.has_bias("qkv") and not b.has_bias("k")
    bias = fused.weights["attn.qkv_proj.bias"]
    assert bias.shape == (32 + 16 + 16,)
    assert np.array_equal(bias[32:48], np.zeros(16))  # the k rows
    assert np.array_equal(bias[:32], w["attn.q_proj.bias"])
    assert "attn.q_proj.bias" not in fused.weights and "attn.o_proj.bias" in fused.weights
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    a = run_reference(model, w, feed)["y"]
    assert np.allclose(run_reference(fused.model, fused.weights, feed)["y"], a, atol=1e-12)


@pytest.mark.parametrize("variant", ["qkv", "k"])
def test_fold_scale_scales_the_q_bias_when_there_is_one(variant):
    model = _model(variant, mask="causal")
    w = _nonzero_biases(model)
    folded = FoldScale().run(Program(model, w)).program
    assert folded.model.block("attn").scale == 1.0
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    want = run_reference(model, w, feed)["y"]
    got = run_reference(folded.model, folded.weights, feed)["y"]
    assert np.max(np.abs(got - want)) <= 1e-6  # the folded weights are float32 again


def test_bias_true_is_unchanged():
    """``bias: true`` stays the core setting (no feature node); its weights as before."""
    model = one_block("    heads: 4\n    bias: true\n")
    b = model.block("attn")
    assert b.bias and b.feature("bias") is None
    assert all(b.has_bias(p) for p in ("q", "k", "v", "o", "qkv"))
    assert sorted(k for k in model.weight_shapes() if k.endswith(".bias")) == [
        f"attn.{p}_proj.bias" for p in "koqv"]


# ------------------------------------------------------------------ IR, syntax, check


def test_weights_only_for_the_listed_projections():
    shapes = _model("qvo").weight_shapes()
    assert {k for k in shapes if k.endswith(".bias")} == {
        "attn.q_proj.bias", "attn.v_proj.bias", "attn.o_proj.bias"}
    assert shapes["attn.v_proj.bias"] == (16,) and shapes["attn.o_proj.bias"] == (32,)


def test_ir_text():
    text = print_ir(_model("qkv"))
    assert "bias false" in text and "    bias q=true, k=true, v=true, o=false\n" in text


def test_both_syntaxes_give_one_model():
    yaml_model = parse_spec(one_block_yaml("    heads: 4\n    bias: {q: true, o: true}\n"),
                            "t.yaml")
    dsl = write_dsl(parse_source(Source(one_block_yaml("    heads: 4\n"), "t.yaml"))).replace(
        "  heads 4", "  heads 4\n  bias q = true, o = true")
    assert parse_spec(dsl, "t.attn") == yaml_model
    assert yaml_model.block("attn").has_bias("o") and not yaml_model.block("attn").bias


@pytest.mark.parametrize("value", ["{q: true, k: true, v: true}", "{k: false, v: true}",
                                   "true", "false"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    bias: {value}\n")
    assert_round_trips(text)


def test_check_reports_the_feature():
    model = parse_spec((ROOT / "specs" / "bias_qwen2.yaml").read_text(), "b.yaml")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    bias   on q_proj, k_proj, v_proj" in report
    # q [64 x 64] + k, v [32 x 64] each, their biases, o [64 x 64]: no o bias
    assert "12,416 parameters" in report


# ------------------------------------------------------------------ errors


def _text(value: str, extra: str = "") -> str:
    return one_block_yaml(f"    heads: 4\n{extra}    bias: {value}\n")


def _where(err, text: str, needle: str) -> None:
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
    line = text.splitlines()[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(needle), (line, err.span)


def test_errors():
    text = _text("{qq: true}")
    err = error_of(text, "s.yaml")
    assert "unknown bias key 'qq'" in str(err) and "did you mean 'q'" in str(err)
    _where(err, text, "qq")
    text = _text("{q: 1}")
    err = error_of(text, "s.yaml")
    assert "bias q must be true or false" in str(err)
    _where(err, text, "1")
    text = _text("{q: false}")
    err = error_of(text, "s.yaml")
    assert "bias lists no projection" in str(err) and "bias: false" in str(err)
    _where(err, text, "bias")
    err = error_of(_text("3"), "s.yaml")
    assert "'bias' must be true or false" in str(err)
    assert "or a mapping like {q: true, k: true, v: true}" in str(err)
    text = _text("{q: true}", "    project: false\n")
    err = error_of(text, "s.yaml")
    assert "bias needs projections (project: true)" in str(err)
    _where(err, text, "bias")


def test_python_api_takes_the_mapping():
    from attndsl.api import Spec

    spec = (Spec.new("t", dims={"batch": "dynamic", "seq": "dynamic", "d": 32})
            .add_input("x", ["batch", "seq", "d"])
            .add_block("attn", query="x", heads=4, bias={"q": True, "v": True, "o": True})
            .add_output("y", "attn"))
    b = spec.model().block("attn")
    assert [b.has_bias(p) for p in "qkvo"] == [True, False, True, True] and not b.bias
    assert spec.block("attn")["bias"] == {"q": True, "v": True, "o": True}
    assert "bias q = true, v = true, o = true" in spec.to_attn()
    plain = spec.with_block("attn", bias=True)
    assert plain.model().block("attn").bias and plain.model().block("attn").feature(
        "bias") is None
