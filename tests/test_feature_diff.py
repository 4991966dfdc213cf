"""Differential attention (``diff``, ``attndsl/features/blocks/diff.py``).

- The reference against transformers' ``DiffLlamaAttention`` run in float64 (the ``Float64``
  mode of ``test_feature_kernels.py``): layers 0, 3 and 5, GQA 4/2, 8/2 and MHA 4/4, lengths
  1, 7 and 33, a sliding window; max abs error <= 1e-12.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2; lengths 1, 7 and 20,
  batch 2, GQA, cross-attention, the dense path and the band, chunks and tiles strategies,
  fully masked rows, the KV cache (prefill then one token at a time equals one full run; the
  cache holds plain per-head values), the ort target (portable fallback, explained).
- Both syntaxes, the round trip through the writers, ``attndsl check``, the errors.
"""

from __future__ import annotations

import math
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
from attndsl.errors import SpecError, SpecErrors
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime import make_session
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize
from attndsl.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("diff max abs error:", width=52)
_report = ERRORS.fixture()
TOL = {"float32": 1e-5, "float16": 2e-2}

# ------------------------------------------------------------------ against transformers

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _config, _randomise, round_to_float32  # noqa: E402


@pytest.mark.parametrize("layer,heads,kv_heads", [(0, 4, 2), (3, 8, 2), (5, 4, 4)])
@pytest.mark.parametrize("s", (1, 7, 33))
@pytest.mark.parametrize("window", (None, 5))
def test_reference_matches_diffllama(layer, heads, kv_heads, s, window):
    from transformers.models.diffllama.modeling_diffllama import (
        DiffLlamaAttention,
        DiffLlamaConfig,
    )

    cfg = _config(DiffLlamaConfig, hidden_size=64, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, head_dim=8, rms_norm_eps=1e-5,
                  num_hidden_layers=layer + 1)
    m = DiffLlamaAttention(cfg, layer)
    _randomise(m, 20 + layer + s)
    w = round_to_float32(m, "attn.")
    x = np.random.default_rng(s).standard_normal((2, s, 64))
    q, k = np.arange(s)[:, None], np.arange(s)[None, :]
    allowed = (k <= q) if window is None else (k <= q) & (q - k < window)
    ang = np.arange(s)[:, None] * (1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8))[None, :]
    emb = np.broadcast_to(np.concatenate([ang, ang], -1), (2, s, 8))
    pe = torch.from_numpy(np.cos(emb).copy()), torch.from_numpy(np.sin(emb).copy())
    mask = np.broadcast_to(np.where(allowed, 0.0, np.finfo(np.float64).min), (2, 1, s, s))
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                 attention_mask=torch.from_numpy(mask.copy()))[0].numpy()
    spec = one_block_yaml(
        f"    heads: {heads}\n    kv_heads: {kv_heads}\n    head_dim: 8\n"
        f"    mask: {'causal' if window is None else f'causal & sliding({window})'}\n"
        f"    rope: true\n    diff: {{layer: {layer}, eps: 1e-5}}\n", d=64)
    model = parse_spec(spec, "t.yaml")
    assert model.block("attn").feature("diff").lambda_init == m.lambda_init
    got = run_reference(model, w, {"x": x})["y"]
    err = float(np.max(np.abs(got - want)))
    ERRORS.record("vs transformers DiffLlamaAttention", err)
    assert err <= 1e-12, err


# ------------------------------------------------------------------ ONNX Runtime vs reference


def _model(dtype: str = "float32", extra: str = "", mask: str = "causal & sliding(8)",
           heads: str = "heads: 4\n    kv_heads: 2", outputs: str = "y: attn",
           seq: str | int = "dynamic", diff: str = "{layer: 3}", inputs: str = ""):
    return one_block(f"    {heads}\n    head_dim: 16\n    mask: {mask}\n    rope: true\n"
                     f"    diff: {diff}\n{extra}", dtype=dtype, outputs=outputs, d=64, seq=seq,
                     inputs=inputs)


def _lowering(model, options: CompileOptions) -> str:
    _, explain = compile_with_explanations(model, None, options)
    return explain[0].lowering


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
@pytest.mark.parametrize("heads", ["heads: 4\n    kv_heads: 2", "heads: 8\n    kv_heads: 2",
                                   "heads: 4\n    kv_heads: 4"])
def test_ort_matches_reference(dtype, sparse, heads):
    # dense: the per-head maps are an output too
    model = _model(dtype, heads=heads, outputs="y: attn\n  p: attn.weights"
                   if sparse == "dense" else "y: attn")
    options = CompileOptions(sparse=sparse, block_size=4)
    assert _lowering(model, options) == ("portable/dense" if sparse == "dense"
                                         else "portable/block-sparse band")
    session = make_session(compile_model(model, None, options=options))
    for seq in (1, 7, 20):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], session=session,
                                      where=f"{dtype} {sparse} {heads!r} seq {seq}")
        ERRORS.record(f"ORT {dtype} {sparse}", err)


@pytest.mark.parametrize("mask,seq,strategy", [
    ("causal", "dynamic", "chunks"),
    ("window(8, 8) | global(0) | random(1, block=8, seed=1)", 64, "tiles"),
    ("causal & padding(len)", "dynamic", "chunks"),
])
def test_block_sparse_strategies(mask, seq, strategy):
    model = _model(mask=mask, seq=seq,
                   inputs="  len: {shape: [batch], dtype: int64}" if "len" in mask else "")
    options = CompileOptions(sparse="block", block_size=8)
    assert _lowering(model, options) == f"portable/block-sparse {strategy}"
    session = make_session(compile_model(model, None, options=options))
    for n in ((64,) if seq == 64 else (1, 7, 20)):
        feed = random_inputs(model, {"batch": 2, "seq": n}, seed=n)
        if "len" in feed:
            feed["len"] = np.array([0, max(n - 3, 1)], feed["len"].dtype)  # batch 0: no keys
        err = check_against_reference(model, feed, 1e-5, session=session,
                                      where=f"{strategy} seq {n}")
        ERRORS.record(f"ORT float32 block-sparse {strategy}", err)


@pytest.mark.parametrize("target", ["portable", "ort"])
def test_cache_prefill_then_steps_equals_full_run(target):
    model = _model(extra="    cache: true\n")
    options = CompileOptions(target=target)
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    proto = compile_model(model, None, options=options)
    errors = max_errors(model, decode_loop(model, proto, inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    ERRORS.record(f"decode steps vs full run ({target})", max(errors.values()))
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    err = check_against_reference(model, feed, 1e-5, session=make_session(proto))
    ERRORS.record(f"ORT float32 with cache ({target})", err)
    # the cache holds the plain per-head values [B, kv_heads, T, v_head_dim]
    present = run_reference(model, load_weights(model), feed)["attn.present_value"]
    assert present.shape == (2, 2, 8, 16)
    assert np.array_equal(present[:, :, :3], feed["attn.past_value"].astype(np.float64))


def test_fp16_cache():
    model = _model("float16", extra="    cache: true\n")
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    ERRORS.record("ORT float16 with cache", check_against_reference(model, feed, 2e-2))


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model(mask="causal", extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel computes differential attention" in explain[0].reason


def test_cross_attention():
    model = parse_spec(one_block_yaml(
        "    key_value: m\n    heads: 4\n    kv_heads: 2\n    diff: true\n",
        dims="  mem: dynamic", inputs="  m: [batch, mem, d]"), "t.yaml")
    for mem in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": 3, "mem": mem}, seed=mem)
        ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_lambda_and_the_pairing_by_halves():
    """Hand-computed: 2 heads, 2 kv heads, one query and one key per head -- each map is 1, so
    o_0 = (1 - li) RMSNorm((1 - lam) [v_0 | v_1]); lambda from the four vectors."""
    model = one_block("    heads: 2\n    kv_heads: 2\n    head_dim: 2\n"
                      "    diff: {lambda_init: 0.5, eps: 1e-6}\n", d=4)
    rng = np.random.default_rng(0)
    # float32 values: the reference rounds a float32 model's weights to float32
    w = {k: rng.standard_normal(v).astype(np.float32).astype(np.float64)
         for k, v in model.weight_shapes().items()}
    w["attn.o_proj.weight"] = np.eye(4)
    x = rng.standard_normal((1, 1, 4))
    v = x[0, 0] @ w["attn.v_proj.weight"].T  # [v_0 | v_1], 2 features each
    lam = (math.exp(w["attn.lambda_q1"] @ w["attn.lambda_k1"])
           - math.exp(w["attn.lambda_q2"] @ w["attn.lambda_k2"]) + 0.5)
    y = (1 - lam) * v
    want = 0.5 * y / np.sqrt(np.mean(y * y) + 1e-6)
    got = run_reference(model, w, {"x": x})["y"][0, 0]
    assert np.max(np.abs(got - want)) <= 1e-12


# ------------------------------------------------------------------ IR, syntax, check


def test_weights_ir_text_and_defaults():
    shapes = _model().weight_shapes()
    for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        assert shapes[f"attn.{name}"] == (16,)
    li = 0.8 - 0.6 * math.exp(-0.9)
    assert f"    diff layer=3, lambda_init={li!r}, eps=1e-05\n" in print_ir(_model())
    default = _model(diff="true").block("attn").feature("diff")
    assert (default.layer, default.eps) == (0, 1e-5)
    assert default.lambda_init == pytest.approx(0.2, abs=1e-15)
    given = _model(diff="{layer: 7, lambda_init: 0.25}").block("attn").feature("diff")
    assert given.lambda_init == 0.25


def test_both_syntaxes_give_one_model():
    assert (parse_spec((ROOT / "specs" / "diff_llama.attn").read_text(), "d.attn").block("attn")
            .feature("diff").layer == 3)
    yaml_model = parse_spec(one_block_yaml("    heads: 4\n    diff: {layer: 2, eps: 1e-6}\n"),
                            "t.yaml")
    dsl = write_dsl(parse_source(Source(one_block_yaml("    heads: 4\n"), "t.yaml"))).replace(
        "  heads 4", "  heads 4\n  diff layer = 2, eps = 1e-6")
    assert parse_spec(dsl, "t.attn") == yaml_model


@pytest.mark.parametrize("value", ["true", "{layer: 3}", "{lambda_init: 0.3, eps: 1e-6}"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    rope: true\n    diff: {value}\n")
    assert_round_trips(text)


def test_check_reports_the_feature():
    model = parse_spec((ROOT / "specs" / "diff_llama.attn").read_text(), "d.attn")
    report = format_summary(summarize(model, {"seq": 16}))
    assert ("    diff   4 head pairs, lambda_init 0.556058 (layer 3), lambda vectors 4 x [16], "
            "values [v_g | v_g'] of width 32, RMSNorm eps 1e-05") in report
    assert "parameters" in report


# ------------------------------------------------------------------ errors


def test_errors():
    cases = {
        "    heads: 3\n    head_dim: 8\n    diff: true\n":
            "diff pairs the heads by halves, so heads must be even, got 3",
        "    heads: 4\n    kv_heads: 1\n    diff: true\n": "kv_heads must be even, got 1",
        "    project: false\n    heads: 4\n    diff: true\n": "use project: true",
        "    heads: 4\n    diff: {layer: -1}\n": "diff layer must be an integer >= 0",
        "    heads: 4\n    diff: {lamda_init: 0.3}\n": "did you mean 'lambda_init'",
        "    heads: 4\n    diff: {eps: 0}\n": "diff eps must be a positive number",
    }
    for block, message in cases.items():
        text = one_block_yaml(block)
        err = error_of(text, "s.yaml")
        if isinstance(err, SpecErrors):  # heads 3: its kv_heads (3) is odd too
            assert "kv_heads must be even, got 3" in str(err)
            err = err.errors[0]
        assert isinstance(err, SpecError)
        assert message in str(err), (block, str(err))
        assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
        assert "diff" in text.splitlines()[err.span.line - 1]
