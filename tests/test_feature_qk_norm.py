"""QK-norm (``qk_norm``, ``attndsl/features/blocks/qk_norm.py``).

- The reference against transformers' own attention modules (Qwen3, Gemma 3, OLMo 2, Cohere,
  StableLM, Llama 4) run in float64 (the ``Float64`` mode of ``test_feature_kernels.py``):
  max abs error <= 1e-12. The modules' parameters are rounded to float32 first, as the
  reference rounds a float32 model's weights.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2; lengths 1 and 7,
  batch 2, GQA, cross-attention, dense and block-sparse strategies, the KV cache (prefill then
  one token at a time equals one full run), the ort target (portable fallback, explained).
- Both syntaxes, the round trip through the writers, and the error messages.
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
from attndsl.errors import SpecError, WeightsError
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("qk_norm max abs error:", width=52)
_report = ERRORS.fixture()

# ------------------------------------------------------------------ against transformers

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _config, _inputs, _randomise, round_to_float32  # noqa: E402

S_LENS = (1, 7, 33)



def _spec(block: str) -> str:
    return one_block_yaml("    heads: 4\n    kv_heads: 2\n    head_dim: 16\n    mask: causal\n"
                          + block, d=64)


def _compare(module, w: dict[str, np.ndarray], spec: str, pe, s: int, name: str) -> float:
    model = parse_spec(spec, "t.yaml")
    x, _, allowed = _inputs(s, 64, s)
    mask = np.where(np.broadcast_to(allowed, (allowed.shape[0], 1, s, s)), 0.0,
                    np.finfo(np.float64).min)
    with torch.no_grad(), Float64():
        want = module(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                      attention_mask=torch.from_numpy(mask))[0].numpy()
    weights = {f"attn.{k}": v for k, v in w.items()}
    got = run_reference(model, weights, {"x": x})["y"]
    err = float(np.max(np.abs(got - want)))
    ERRORS.record(f"vs transformers {name}", err)
    assert err <= 1e-12, err
    return err


def _angles(s: int, dim: int, theta: float) -> np.ndarray:
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    return np.broadcast_to(np.arange(s), (2, s))[..., None] * inv  # [B, S, dim/2]


def _half(ang: np.ndarray):
    emb = np.concatenate([ang, ang], axis=-1)
    return torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb))


@pytest.mark.parametrize("s", S_LENS)
def test_qwen3(s):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3Config

    cfg = _config(Qwen3Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, attention_bias=True, rms_norm_eps=1e-6)
    m = Qwen3Attention(cfg, 0)
    _randomise(m, 1)
    w = round_to_float32(m)
    _compare(m, w, _spec("    bias: true\n    rope: true\n    qk_norm: rms\n"),
             _half(_angles(s, 16, 10000.0)), s, "Qwen3 (rms, shared)")


@pytest.mark.parametrize("s", S_LENS)
def test_gemma3_offset_one(s):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3Attention, Gemma3TextConfig

    cfg = _config(Gemma3TextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, query_pre_attn_scalar=24, rms_norm_eps=1e-6, num_hidden_layers=1)
    m = Gemma3Attention(cfg, 0)
    _randomise(m, 2)
    w = round_to_float32(m)
    _compare(m, w, _spec(f"    scale: {24 ** -0.5!r}\n    rope: true\n"
                         "    qk_norm: {offset: 1}\n"),
             _half(_angles(s, 16, 10000.0)), s, "Gemma 3 (rms, 1 + w)")


@pytest.mark.parametrize("s", S_LENS)
def test_olmo2_width(s):
    from transformers.models.olmo2.modeling_olmo2 import Olmo2Attention, Olmo2Config

    cfg = _config(Olmo2Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  rms_norm_eps=1e-5)
    m = Olmo2Attention(cfg, 0)
    _randomise(m, 3)
    w = round_to_float32(m)
    assert w["q_norm.weight"].shape == (64,) and w["k_norm.weight"].shape == (32,)
    _compare(m, w, _spec("    rope: true\n    qk_norm: {eps: 1e-5, scope: width}\n"),
             _half(_angles(s, 16, 10000.0)), s, "OLMo 2 (rms, width)")


@pytest.mark.parametrize("s", S_LENS)
def test_cohere_per_head_layer_norm(s):
    from transformers.models.cohere.modeling_cohere import CohereAttention, CohereConfig

    cfg = _config(CohereConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  use_qk_norm=True, layer_norm_eps=1e-5)
    m = CohereAttention(cfg, 0)
    _randomise(m, 4)
    w = round_to_float32(m)
    assert w["q_norm.weight"].shape == (4, 16) and w["k_norm.weight"].shape == (2, 16)
    ang = _angles(s, 16, 10000.0)
    emb = np.repeat(ang, 2, axis=-1)  # Cohere interleaves cos/sin
    pe = (torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
    _compare(m, w, _spec("    rope: {interleaved: true}\n"
                         "    qk_norm: {kind: layer, weight: per_head}\n"),
             pe, s, "Cohere (layer, per head)")


@pytest.mark.parametrize("s", S_LENS)
def test_stablelm_layer_norm_per_head_partial_rope(s):
    from transformers.models.stablelm.modeling_stablelm import StableLmAttention, StableLmConfig

    cfg = _config(StableLmConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  qk_layernorm=True, use_qkv_bias=True, layer_norm_eps=1e-5)
    m = StableLmAttention(cfg, 0)
    _randomise(m, 5)
    w = round_to_float32(m)
    # one nn.LayerNorm(D, bias=False) per head: the [H, D] weight; no o_proj bias (zeros)
    w["q_norm.weight"] = np.stack([w.pop(f"q_layernorm.norms.{h}.weight") for h in range(4)])
    w["k_norm.weight"] = np.stack([w.pop(f"k_layernorm.norms.{h}.weight") for h in range(2)])
    w["o_proj.bias"] = np.zeros(64)
    _compare(m, w, _spec("    bias: true\n    rope: {dim: 4}\n"
                         "    qk_norm: {kind: layer, weight: per_head}\n"),
             _half(_angles(s, 4, 10000.0)), s, "StableLM (layer, per head)")


@pytest.mark.parametrize("s", S_LENS)
def test_llama4_l2_after_rope(s):
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention, Llama4TextConfig

    cfg = _config(Llama4TextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=2, no_rope_layers=[1, 0], rms_norm_eps=1e-5,
                  use_qk_norm=True)
    m = Llama4TextAttention(cfg, 0)
    assert m.use_rope and hasattr(m, "qk_norm")
    _randomise(m, 6)
    w = round_to_float32(m)
    freqs = torch.polar(torch.ones(2, s, 8, dtype=torch.float64),
                        torch.from_numpy(_angles(s, 16, 500000.0).copy()))
    _compare(m, w, _spec("    rope: {theta: 500000.0, interleaved: true}\n"
                         "    qk_norm: {kind: l2, eps: 1e-5, after_rope: true}\n"),
             freqs, s, "Llama 4 (l2 after RoPE)")


# ------------------------------------------------------------------ ONNX Runtime vs reference

VARIANTS = {
    "rms": "rms",
    "rms-offset": "{offset: 1.0}",
    "layer-bias-per-head": "{kind: layer, weight: per_head, bias: true}",
    "l2-after-rope": "{kind: l2, after_rope: true}",
    "rms-width": "{scope: width}",
    "none-weight": "{weight: none}",
}
TOL = {"float32": 1e-5, "float16": 2e-2}


def _model(variant: str, dtype: str = "float32", extra: str = "", mask: str = "causal",
           outputs: str = "y: attn"):
    return one_block(f"    heads: 4\n    kv_heads: 2\n    mask: {mask}\n    rope: true\n"
                     f"    qk_norm: {VARIANTS[variant]}\n{extra}", dtype=dtype, outputs=outputs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(variant, dtype, sparse):
    # dense: the probabilities are an output too (they show the normalised q and k best)
    model = _model(variant, dtype, mask="causal & sliding(8)",
                   outputs="y: attn\n  p: attn.weights" if sparse == "dense" else "y: attn")
    options = CompileOptions(sparse=sparse, block_size=4)
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], options=options,
                                      where=f"{variant} {dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype} {variant}", err)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cache_prefill_then_steps_equals_full_run(variant):
    model = _model(variant, extra="    cache: true\n")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    proto = compile_model(model)
    errors = max_errors(model, decode_loop(model, proto, inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    ERRORS.record("ORT float32 with cache", check_against_reference(model, feed, 1e-5))


def test_cross_attention():
    model = parse_spec(one_block_yaml(
        "    key_value: m\n    heads: 4\n    kv_heads: 2\n    qk_norm: {kind: layer}\n",
        dims="  mem: dynamic", inputs="  m: [batch, mem, d]"), "t.yaml")
    feed = random_inputs(model, {"batch": 2, "seq": 3, "mem": 7}, seed=1)
    ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_core_mode_l2():
    model = parse_spec(one_block_yaml("    project: false\n    heads: 4\n    mask: causal\n"
                                      "    qk_norm: l2\n"), "t.yaml")
    assert model.weight_shapes() == {}
    feed = random_inputs(model, {"batch": 1, "seq": 6}, seed=2)
    check_against_reference(model, feed, 1e-5)


def test_qk_norm_changes_the_output_and_is_not_folded():
    """fold-scale would move the scale into q_proj, which the norm undoes: it must skip the
    block (the default passes run in the tests above, so the match shows it does)."""
    with_norm, without = _model("rms"), one_block("    heads: 4\n    kv_heads: 2\n"
                                                  "    mask: causal\n    rope: true\n")
    feed = random_inputs(with_norm, {"batch": 1, "seq": 6}, seed=2)
    weights = {k: np.ones(v) for k, v in with_norm.weight_shapes().items() if "_norm" in k}
    base = {k: np.full(v, 0.3) for k, v in without.weight_shapes().items()}
    a = run_reference(with_norm, {**base, **weights}, feed)["y"]
    b = run_reference(without, base, feed)["y"]
    assert not np.allclose(a, b)


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model("rms", extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel normalises queries and keys (qk_norm)" in explain[0].reason
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


# ------------------------------------------------------------------ IR, syntax, check


def test_weights_shapes():
    shapes = {v: _model(v).weight_shapes() for v in VARIANTS}
    assert shapes["rms"]["attn.q_norm.weight"] == (8,)
    assert shapes["layer-bias-per-head"]["attn.k_norm.bias"] == (2, 8)
    assert shapes["rms-width"]["attn.q_norm.weight"] == (32,)
    assert shapes["rms-width"]["attn.k_norm.weight"] == (16,)
    assert not any("_norm" in k for k in shapes["l2-after-rope"])
    assert not any("_norm" in k for k in shapes["none-weight"])


def test_ir_text_and_defaults():
    text = print_ir(_model("rms"))
    assert ("    qk_norm kind=rms, eps=1e-06, scope=head, weight=shared, offset=0.0, "
            "bias=false, after_rope=false\n    rope theta=") in text
    layer = one_block("    heads: 4\n    qk_norm: layer\n").block("attn").feature("qk_norm")
    assert (layer.kind, layer.eps, layer.weight) == ("layer", 1e-5, "shared")


def test_both_syntaxes_give_one_model():
    yaml_model = parse_spec(one_block_yaml(
        "    heads: 4\n    qk_norm: {kind: layer, weight: per_head, eps: 0.001}\n"), "t.yaml")
    dsl = """attndsl 1
model t
seed 0
dims batch = dynamic, seq = dynamic, d = 32
input x: [batch, seq, d]
block attn = attention(query = x) {
  heads 4
  qk_norm kind = layer, weight = per_head, eps = 0.001
}
output y = attn
"""
    assert parse_spec(dsl, "t.attn") == yaml_model
    short = parse_spec(dsl.replace("kind = layer, weight = per_head, eps = 0.001", "true")
                       .replace("qk_norm true", "qk_norm l2"), "t.attn")
    assert short.block("attn").feature("qk_norm").kind == "l2"


@pytest.mark.parametrize("value", ["rms", "l2", "true", "{kind: layer, bias: true}",
                                   "{scope: width, eps: 1e-5}", "{after_rope: true}"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    rope: true\n    qk_norm: {value}\n")
    assert_round_trips(text)


def test_check_reports_the_feature():
    model = parse_spec((ROOT / "specs" / "qk_norm_qwen3.yaml").read_text(), "q.yaml")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    qk_norm rms over head_dim, weight shared q [32] k [32], eps 1e-06, before RoPE" \
        in report
    plain = parse_spec(one_block_yaml("    heads: 4\n"), "t.yaml")
    assert "qk_norm" not in format_summary(summarize(plain, {"seq": 16}))


# ------------------------------------------------------------------ errors


def _text(value: str, extra: str = "") -> str:
    return one_block_yaml(f"    heads: 4\n{extra}    qk_norm: {value}\n")


def _err(value: str, extra: str = ""):
    return error_of(_text(value, extra), "s.yaml")


def _pos(text: str, needle: str, after: str = "qk_norm:") -> tuple[int, int]:
    """(line, column) of ``needle`` on the first line holding ``after``."""
    for i, line in enumerate(text.splitlines(), 1):
        if after in line:
            return i, line.index(needle, line.index(after)) + 1
    raise AssertionError(needle)


def _where(err) -> tuple[int, int]:
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err)
    assert "^" in str(err)  # the caret under the offending text
    return err.span.line, err.span.col


def test_bad_kind_with_did_you_mean():
    err = _err("{kind: rsm}")
    assert isinstance(err, SpecError)
    assert "qk_norm kind must be one of rms, layer, l2, got 'rsm'" in str(err)
    assert "did you mean 'rms'" in str(err)
    assert _where(err) == _pos(_text("{kind: rsm}"), "rsm")
    short = _err("layr")
    assert "qk_norm must be a mapping like {kind: rms, eps: 1e-6}" in str(short)
    assert "did you mean 'layer'" in str(short)
    assert _where(short) == _pos(_text("layr"), "layr")


def test_unknown_key_and_bad_eps():
    err = _err("{epsilon: 1e-6}")
    assert "unknown qk_norm key 'epsilon'" in str(err) and "did you mean 'eps'" in str(err)
    assert _where(err) == _pos(_text("{epsilon: 1e-6}"), "epsilon")
    for eps in ("0", "-1e-6", "0.0"):
        err = _err(f"{{eps: {eps}}}")
        assert "qk_norm eps must be a positive number" in str(err)
        assert _where(err) == _pos(_text(f"{{eps: {eps}}}"), eps)


def test_impossible_combinations():
    cases = {
        "{kind: l2, weight: shared}": "qk_norm kind l2 has no weight",
        "{scope: width, weight: shared}": "not one shared by the heads",
        "{scope: width, after_rope: true}": "normalises before the head split",
        "{kind: layer, offset: 1}": "offset is for kind rms",
        "{bias: true}": "bias is for kind layer",
    }
    for value, message in cases.items():
        assert message in str(_err(value)), value
    core = _err("rms", extra="    project: false\n")
    assert "qk_norm weights need projections (project: true)" in str(core)
    assert "use kind l2 or weight none in core mode" in str(core)
    assert _where(core) == _pos(_text("rms", "    project: false\n"), "qk_norm", "qk_norm:")


def test_dsl_errors_have_positions():
    text = one_block_yaml("    heads: 4\n")
    dsl = write_dsl(parse_source(Source(text, "t.yaml"))).replace(
        "  heads 4", "  heads 4\n  qk_norm kind = lyer")
    err = error_of(dsl, "s.attn")
    assert "did you mean 'layer'" in str(err)
    assert str(err).startswith(f"s.attn:{err.span.line}:{err.span.col}")
    assert dsl.splitlines()[err.span.line - 1][err.span.col - 1:].startswith("lyer")


def test_weights_shape_mismatch():
    model = _model("rms")
    weights = {k: np.zeros(v, np.float32) for k, v in model.weight_shapes().items()}
    weights["attn.q_norm.weight"] = np.zeros((4, 8), np.float32)
    with pytest.raises(WeightsError, match=r"attn\.q_norm\.weight"):
        compile_model(model, weights)

