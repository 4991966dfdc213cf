"""``output_gate`` (``attndsl/features/blocks/output_gate.py``): ``o_proj(attn * sigmoid(g))``.

- The reference against transformers' Qwen3NextAttention (gate rows in ``q_proj``, per head
  after the query rows; its (1 + w) QK-norm and partial RoPE), with and without
  ``attention_bias``, in float64 (the ``Float64`` mode of ``test_feature_kernels.py``): max abs
  error <= 1e-12. ``source: own`` against an independent PyTorch computation in float64.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, lengths 1 and 7,
  batch 2, GQA/MQA, cross-attention, dense and block-sparse, the cache, the ort target
  (portable, explained); fuse-qkv and fold-scale skip a gated block.
- Both syntaxes, the round trip, ``attndsl check`` (parameters, FLOPs), the error messages.
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
from attndsl.errors import WeightsError
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.passes.base import Program
from attndsl.passes.fold_scale import FoldScale
from attndsl.passes.fuse_qkv import FuseQKV
from attndsl.reference import run_reference
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.summary import format_summary, summarize
from attndsl.weights import seeded_weights

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("output_gate max abs error:", width=52)
_report = ERRORS.fixture()

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _additive, _config, _inputs, _randomise, round_to_float32  # noqa: E402


def _record(name: str, got: np.ndarray, want: np.ndarray) -> None:
    err = float(np.max(np.abs(got - want)))
    ERRORS.record(name, err)
    assert err <= 1e-12, err


@pytest.mark.parametrize("s", (1, 7, 33))
@pytest.mark.parametrize("bias", [False, True])
def test_qwen3_next_gate_from_query_rows(s, bias):
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        Qwen3NextAttention,
        Qwen3NextConfig,
    )

    cfg = _config(Qwen3NextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=1, layer_types=["full_attention"],
                  rms_norm_eps=1e-6, attention_bias=bias)
    m = Qwen3NextAttention(cfg, 0)
    _randomise(m, 9 + bias)
    w = round_to_float32(m, "attn.")
    assert w["attn.q_proj.weight"].shape == (4 * 2 * 16, 64)
    x, _, allowed = _inputs(s, 64, s)
    ang = np.arange(s)[:, None] * (1.0 / 10000.0 ** (np.arange(0, 4, 2) / 4))[None]  # dim 4
    emb = np.broadcast_to(np.concatenate([ang, ang], -1), (2, s, 4))
    pe = (torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                 attention_mask=_additive(allowed))[0].numpy()
    model = one_block("    heads: 4\n    kv_heads: 2\n    head_dim: 16\n    mask: causal\n"
                      "    rope: {dim: 4}\n    qk_norm: {offset: 1.0}\n    output_gate: true\n"
                      + ("    bias: true\n" if bias else ""), d=64)
    assert model.weight_shapes() == {k: v.shape for k, v in w.items()}
    got = run_reference(model, w, {"x": x})["y"]
    _record(f"vs transformers Qwen3-Next{' (bias)' if bias else ''}", got, want)


@pytest.mark.parametrize("s", (1, 7))
def test_own_gate_projection_against_torch(s):
    model = one_block("    heads: 4\n    kv_heads: 1\n    v_head_dim: 4\n    mask: causal\n"
                      "    output_gate: own\n")
    w = {k: np.asarray(v, np.float64) for k, v in seeded_weights(model).items()}
    assert w["attn.g_proj.weight"].shape == (16, 32)
    x = np.random.default_rng(s).standard_normal((2, s, 32))
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    xt = torch.from_numpy(x)
    q = (xt @ t["attn.q_proj.weight"].T).view(2, s, 4, 8).transpose(1, 2)
    k = (xt @ t["attn.k_proj.weight"].T).view(2, s, 1, 8).transpose(1, 2)
    v = (xt @ t["attn.v_proj.weight"].T).view(2, s, 1, 4).transpose(1, 2)
    o = torch.nn.functional.scaled_dot_product_attention(
        q, k.expand(2, 4, s, 8), v.expand(2, 4, s, 4), is_causal=True)
    o = o.transpose(1, 2).reshape(2, s, 16) * torch.sigmoid(xt @ t["attn.g_proj.weight"].T)
    want = (o @ t["attn.o_proj.weight"].T).numpy()
    _record("vs torch (source own)", run_reference(model, w, {"x": x})["y"], want)


# ------------------------------------------------------------------ ONNX Runtime vs reference

VARIANTS = {"query": "true", "query-bias": "true\n    bias: true", "own": "own"}
TOL = {"float32": 1e-5, "float16": 2e-2}


def _model(variant: str, dtype: str = "float32", extra: str = "", mask: str = "causal",
           heads: str = "    heads: 4\n    kv_heads: 2\n", **kw):
    return one_block(f"{heads}    mask: {mask}\n    rope: true\n"
                     f"    output_gate: {VARIANTS[variant]}\n{extra}", dtype=dtype, **kw)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(variant, dtype, sparse):
    model = _model(variant, dtype, mask="causal & sliding(8)")
    options = CompileOptions(sparse=sparse, block_size=4)
    _, explain = compile_with_explanations(model, None, options)
    assert ("block-sparse" in explain[0].lowering) == (sparse == "block"), explain
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], options=options,
                                      where=f"{variant} {dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype} {variant}", err)


@pytest.mark.parametrize("variant", ["query", "own"])
def test_cache_prefill_then_steps_equals_full_run(variant):
    model = _model(variant, extra="    cache: true\n", heads="    heads: 4\n    kv_heads: 1\n")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    errors = max_errors(model, decode_loop(model, compile_model(model), inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    ERRORS.record("ORT float32 with cache", check_against_reference(model, feed, 1e-5))


def test_fp16_cache():
    model = _model("query", "float16", extra="    cache: true\n")
    feed = random_inputs(model, {"batch": 2, "seq": 3}, seed=5, past_len=4)
    ERRORS.record("ORT float16 with cache", check_against_reference(model, feed, 2e-2))


@pytest.mark.parametrize("variant", ["query", "own"])
def test_cross_attention(variant):
    model = one_block(f"    key_value: m\n    heads: 4\n    kv_heads: 2\n"
                      f"    output_gate: {VARIANTS[variant]}\n",
                      dims="  mem: dynamic", inputs="  m: [batch, mem, d]")
    feed = random_inputs(model, {"batch": 2, "seq": 3, "mem": 7}, seed=1)
    ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_gate_changes_the_output():
    model = _model("query", extra="    bias: true\n")
    w = seeded_weights(model)
    feed = random_inputs(model, {"batch": 1, "seq": 5}, seed=2)
    gated = run_reference(model, w, feed)["y"]
    plain = one_block("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: true\n"
                      "    bias: true\n")
    # the plain block with the query rows of the gated q_proj: only the gate differs
    rows = np.asarray(w["attn.q_proj.weight"]).reshape(4, 2, 8, 32)[:, 0].reshape(32, 32)
    brows = np.asarray(w["attn.q_proj.bias"]).reshape(4, 2, 8)[:, 0].reshape(32)
    pw = {**w, "attn.q_proj.weight": rows, "attn.q_proj.bias": brows}
    o = run_reference(plain, pw, feed)["y"]
    assert not np.allclose(gated, o)


def test_passes_skip_a_gated_block():
    for variant in ("query", "own"):
        model = _model(variant)
        w = seeded_weights(model)
        assert not FuseQKV().run(Program(model, w)).changed
        assert not FoldScale().run(Program(model, w)).changed


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model("query", extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel gates its output (output_gate)" in explain[0].reason
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


# ------------------------------------------------------------------ IR, syntax, check


def test_weights_and_ir_text():
    shapes = _model("query-bias").weight_shapes()
    assert shapes["attn.q_proj.weight"] == (64, 32) and shapes["attn.q_proj.bias"] == (64,)
    assert shapes["attn.k_proj.bias"] == (16,) and "attn.g_proj.weight" not in shapes
    own = _model("own").weight_shapes()
    assert own["attn.q_proj.weight"] == (32, 32) and own["attn.g_proj.weight"] == (32, 32)
    assert "    output_gate source=query\n" in print_ir(_model("query"))


def test_wrong_q_proj_shape_is_a_weights_error():
    model = _model("query")
    w = dict(seeded_weights(model))
    w["attn.q_proj.weight"] = np.zeros((32, 32), np.float32)
    with pytest.raises(WeightsError, match="q_proj.weight"):
        compile_model(model, w)


@pytest.mark.parametrize("value", ["true", "own", "query", "{source: own}"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    output_gate: {value}\n")
    assert_round_trips(text)


def test_example_spec_and_check():
    model = parse_spec((ROOT / "specs" / "output_gate_qwen3_next.yaml").read_text(), "g.yaml")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    output_gate o * sigmoid(g), g from q_proj rows (per head [q; g], q_proj [128])" \
        in report
    # q_proj [128 x 64], k/v [32 x 64], o [64 x 64], q_norm/k_norm [16]
    assert "16,416 parameters" in report
    plain = parse_spec((ROOT / "specs" / "output_gate_qwen3_next.yaml").read_text().replace(
        "    output_gate: {source: query}\n", ""), "g.yaml")
    gated = summarize(model, {"seq": 16, "batch": 1}).blocks[0].proj_flops
    assert gated - summarize(plain, {"seq": 16, "batch": 1}).blocks[0].proj_flops == \
        2 * 16 * 64 * 64  # the gate rows: [64, 64] per query token


# ------------------------------------------------------------------ errors


def _where(err, text: str, needle: str) -> None:
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
    line = text.splitlines()[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(needle), (line, err.span)


@pytest.mark.parametrize("extra,value,message,hint,at", [
    ("", "{source: qury}", "output_gate source must be one of query, own", "did you mean "
     "'query'", "qury"),
    ("", "gate", "output_gate must be a mapping like {source: query}", "", "gate"),
    ("    project: false\n", "true", "output_gate needs projections (project: true)",
     "drop output_gate or set project: true", "output_gate"),
    ("    v_head_dim: 4\n", "true", "output_gate source query gives head_dim (8) gate values",
     "use source: own", "output_gate"),
])
def test_errors(extra, value, message, hint, at):
    text = one_block_yaml(f"    heads: 4\n{extra}    output_gate: {value}\n")
    err = error_of(text, "s.yaml")
    assert message in str(err) and hint in str(err)
    _where(err, text, at)
