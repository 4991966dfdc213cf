"""RoPE scaling and explicit position ids (``rope``, ``attndsl/features/blocks/rope.py``).

- The reference against transformers 5.23 in float64 (<= 1e-12): the rotary embedding
  modules of Llama (linear, dynamic, llama3, position ids with left padding), Phi-3
  (longrope, short and long), DeepSeek V3 (yarn with mscale / mscale_all_dim and its softmax
  scale), Qwen2 (yarn) and gpt-oss (yarn, truncate false) give cos and sin (run once in
  float32 so that their per-call state is transformers' own, then in float64 through the
  ``Float64`` mode of ``test_feature_kernels.py``), which LlamaAttention applies in float64.
  The frequencies are transformers' float32 values in both (``features/rope_scaling.py``
  matches them bit for bit for these configurations).
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, lengths 1 and 7,
  batch 2, GQA, both layouts, partial rotation, dense and block-sparse (band, chunks, tiles),
  the KV cache (prefill then one token at a time equals one full run where transformers'
  numbers allow it: not for dynamic past max_position_embeddings or longrope past the
  original length, which is shown), cross-attention, position ids, the ort target (the
  scaled cos/sin caches feed GroupQueryAttention and RotaryEmbedding exactly; position ids
  fall back to the portable lowering with the reason).
- Both syntaxes (float lists ``[1.0, 1.1]``), the round trip, ``check``, the error messages.

Float32 angles: ONNX Runtime forms ``f32(pos) * f32(inv)`` in float32 like transformers, the
reference in float64; at position p the angle error is up to ``p * 2**-24 * inv``, so the
1e-5 tolerance is for moderate positions; ``test_long_positions_float32_angles`` measures
~1e-7 near 0 and ~8e-6 near 1e5 (float32 RoPE differs from exact RoPE in transformers too).
"""

from __future__ import annotations

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
from attndsl.errors import SpecError
from attndsl.features.rope_scaling import RopeScaling, yarn_softmax_scale
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize

ERRORS = ErrorReport("rope scaling max abs error:", width=52)
_report = ERRORS.fixture()

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _config, _randomise  # noqa: E402
from transformers import (  # noqa: E402
    DeepseekV3Config,
    GptOssConfig,
    LlamaConfig,
    Phi3Config,
    Qwen2Config,
)
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (  # noqa: E402
    DeepseekV3RotaryEmbedding,
)
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import (  # noqa: E402
    LlamaAttention,
    LlamaRotaryEmbedding,
)
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding  # noqa: E402
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding  # noqa: E402

D = 16  # head_dim of the transformers comparisons
SHORT = [1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35]
LONG = [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 14.0, 20.0]


def _yaml_map(params: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in params.items()) + "}"


# name: (config class, rotary module, rope_parameters, theta, max_position_embeddings)
HF = {
    "llama3": (LlamaConfig, LlamaRotaryEmbedding,
               dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=64), 500000.0, 256),
    "linear": (LlamaConfig, LlamaRotaryEmbedding, dict(rope_type="linear", factor=2.0),
               10000.0, 256),
    "dynamic": (LlamaConfig, LlamaRotaryEmbedding, dict(rope_type="dynamic", factor=2.0),
                10000.0, 8),
    "longrope-phi3": (Phi3Config, Phi3RotaryEmbedding,
                      dict(rope_type="longrope", short_factor=SHORT, long_factor=LONG,
                           original_max_position_embeddings=16), 10000.0, 128),
    "yarn-deepseek-v3": (DeepseekV3Config, DeepseekV3RotaryEmbedding,
                         dict(rope_type="yarn", factor=40.0, original_max_position_embeddings=64,
                              beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
                         10000.0, 2560),
    "yarn-qwen2": (Qwen2Config, Qwen2RotaryEmbedding,
                   dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
                   1e6, 256),
    "yarn-gpt-oss": (GptOssConfig, GptOssRotaryEmbedding,
                     dict(rope_type="yarn", factor=32.0, original_max_position_embeddings=64,
                          beta_fast=32.0, beta_slow=1.0, truncate=False), 150000.0, 2048),
}


def _hf_rotary(name: str):
    cls, module, params, theta, mpe = HF[name]
    p = dict(params, rope_theta=theta)
    kw = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=mpe, rope_parameters=p)
    if cls is Phi3Config:  # its own field overrides the one in rope_parameters
        kw["original_max_position_embeddings"] = p["original_max_position_embeddings"]
    elif cls is DeepseekV3Config:
        kw.update(qk_rope_head_dim=D, qk_nope_head_dim=0, v_head_dim=D, head_dim=D)
    elif cls is not Qwen2Config:
        kw["head_dim"] = D
    return module(cls(**kw))


def _rope_setting(name: str, positions: str | None = None) -> str:
    _, _, params, theta, mpe = HF[name]
    p = {"theta": theta, "scaling": params["rope_type"],
         **{k: v for k, v in params.items() if k != "rope_type"}}
    if params["rope_type"] in ("dynamic", "longrope", "yarn"):
        p["max_position_embeddings"] = mpe
    if positions:
        p["positions"] = positions
    return _yaml_map({k: str(v).lower() if isinstance(v, bool) else v for k, v in p.items()})


def _hf_cos_sin(rotary, pos: np.ndarray):
    """cos, sin [B, S, D] of the transformers module for position ids ``pos``: one float32
    call (transformers' own state: dynamic's grown table, longrope's long table), then the
    same call in float64."""
    p = torch.from_numpy(pos)
    with torch.no_grad():
        rotary(torch.zeros(1), p)
        with Float64():
            cos, sin = rotary(torch.zeros(1, dtype=torch.float64), p)
    if cos.shape[-1] == D // 2:  # gpt-oss returns the half table
        cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    assert cos.dtype == torch.float64
    return cos, sin


def _vs_transformers(name: str, pos: np.ndarray, positions: bool, seed: int) -> float:
    b, s = pos.shape
    cfg = _config(LlamaConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=D)
    attn = LlamaAttention(cfg, 0)
    _randomise(attn, seed)
    with torch.no_grad():
        for prm in attn.parameters():  # the float32 values a float32 model holds
            prm.copy_(prm.float().double())
    scale = D ** -0.5
    if name == "yarn-deepseek-v3":  # DeepSeek multiplies the softmax scale by mscale**2
        _, _, params, theta, mpe = HF[name]
        scaling = RopeScaling.from_mapping({**params, "max_position_embeddings": mpe})
        scale = yarn_softmax_scale(scaling, scale)
        attn.scaling = scale
        assert scale != D ** -0.5
    x = np.random.default_rng(seed).standard_normal((b, s, 64))
    causal = np.tril(np.ones((s, s), bool))
    mask = np.broadcast_to(np.where(causal, 0.0, np.finfo(np.float64).min), (b, 1, s, s))
    pe = _hf_cos_sin(_hf_rotary(name), pos)  # built outside Float64: float32 frequencies
    with torch.no_grad(), Float64():
        want = attn(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                    attention_mask=torch.from_numpy(mask.copy()))[0].numpy()
    inputs = "  pos: {shape: [batch, seq], dtype: int64}" if positions else ""
    model = parse_spec(one_block_yaml(
        f"    heads: 4\n    kv_heads: 2\n    head_dim: {D}\n    mask: causal\n"
        f"    scale: {scale!r}\n    rope: {_rope_setting(name, 'pos' if positions else None)}\n",
        d=64, inputs=inputs), "t.yaml")
    weights = {f"attn.{k}": v.detach().numpy() for k, v in attn.state_dict().items()}
    feed = {"x": x, **({"pos": pos} if positions else {})}
    got = run_reference(model, weights, feed)["y"]
    return float(np.max(np.abs(got - want)))


@pytest.mark.parametrize("s", [1, 7, 33])
@pytest.mark.parametrize("name", HF)
def test_reference_matches_transformers(name, s):
    # s = 33 takes dynamic past max_position_embeddings (8) and longrope past the original 16
    pos = np.broadcast_to(np.arange(s), (2, s)).copy()
    err = _vs_transformers(name, pos, False, seed=s)
    ERRORS.record(f"vs transformers {name}", err)
    assert err <= 1e-12, err


@pytest.mark.parametrize("name", ["llama3", "longrope-phi3", "dynamic"])
def test_position_ids_with_left_padding_match_transformers(name):
    # transformers' left padding: position_ids = cumsum(attention_mask) - 1, pads at 1; row 1
    # continues at 11 (a packed sequence), which takes longrope's long table (L = 18 > 16)
    # and dynamic's grown base (> 8) for the whole batch
    pos = np.array([[1, 1, 1, 0, 1, 2, 3], [11, 12, 13, 14, 15, 16, 17]], np.int64)
    err = _vs_transformers(name, pos, True, seed=5)
    ERRORS.record(f"vs transformers {name}, position ids", err)
    assert err <= 1e-12, err


def test_interleaved_yarn_matches_deepseek_v3():
    """DeepSeek V3 rotates interleaved pairs (its ``apply_rotary_pos_emb_interleave``, which
    returns the pairs de-interleaved: rotated evens, then rotated odds)."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        apply_rotary_pos_emb_interleave,
    )

    from attndsl.features.blocks.rope import Rope, frequencies, rotate64

    _, _, params, theta, mpe = HF["yarn-deepseek-v3"]
    pos = np.array([[0, 1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 2, 3, 4]], np.int64)
    cos, sin = _hf_cos_sin(_hf_rotary("yarn-deepseek-v3"), pos)
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((2, 4, 7, D)), rng.standard_normal((2, 2, 7, D))
    with torch.no_grad(), Float64():
        want_q, want_k = apply_rotary_pos_emb_interleave(torch.from_numpy(q),
                                                         torch.from_numpy(k), cos, sin)
    r = Rope(theta, D, True, RopeScaling.from_mapping({**params,
                                                       "max_position_embeddings": mpe}))
    inv, factor = frequencies(r, int(pos.max()) + 1)
    for x, want in ((q, want_q.numpy()), (k, want_k.numpy())):
        got = rotate64(x, pos, inv, factor, D, True)
        got = np.concatenate([got[..., 0::2], got[..., 1::2]], axis=-1)
        err = float(np.max(np.abs(got - want)))
        ERRORS.record("vs transformers DeepSeek V3 interleaved yarn", err)
        assert err <= 1e-12, err


def test_index_positions_equal_explicit_arange():
    pos = np.broadcast_to(np.arange(7), (2, 7)).copy()
    for name in ("llama3", "longrope-phi3"):
        assert abs(_vs_transformers(name, pos, True, 3)
                   - _vs_transformers(name, pos, False, 3)) <= 1e-12


# ------------------------------------------------------------------ ONNX Runtime vs reference

F4, L4 = "[1.0, 1.1, 1.2, 1.3]", "[1.0, 2.0, 5.0, 9.0]"
F8, L8 = str(SHORT), str(LONG)
VARIANTS = {
    "linear": "{scaling: linear, factor: 2.0}",
    "llama3-interleaved": ("{theta: 500000.0, interleaved: true, scaling: llama3, factor: 8.0, "
                           "low_freq_factor: 1.0, high_freq_factor: 4.0, "
                           "original_max_position_embeddings: 16}"),
    "yarn": ("{scaling: yarn, factor: 4.0, original_max_position_embeddings: 16, "
             "beta_fast: 16.0, beta_slow: 2.0}"),
    "yarn-partial-dim": ("{dim: 4, scaling: yarn, factor: 8.0, "
                         "original_max_position_embeddings: 32, truncate: false, "
                         "attention_factor: 1.2}"),
    "dynamic": "{scaling: dynamic, factor: 3.0, max_position_embeddings: 4}",
    "longrope": (f"{{scaling: longrope, short_factor: {F4}, long_factor: {L4},"
                 " original_max_position_embeddings: 4, max_position_embeddings: 32}"),
    "longrope-interleaved-positions": (
        f"{{interleaved: true, scaling: longrope, short_factor: {F4}, long_factor: {L4}, "
        "original_max_position_embeddings: 4, factor: 8.0, positions: pos}"),
    "plain-positions": "{positions: pos}",
}
POS_INPUT = "  pos: {shape: [batch, seq], dtype: int64}"
TOL = {"float32": 1e-5, "float16": 2e-2}


def _model(variant: str, dtype: str = "float32", mask: str = "causal", extra: str = "",
           seq: str = "dynamic", heads: str = "    heads: 4\n    kv_heads: 2\n"):
    inputs = POS_INPUT if "positions" in variant else ""
    rope = VARIANTS[variant]
    if "head_dim: 16" in heads:  # longrope: one factor per rotated frequency
        rope = rope.replace(F4, F8).replace(L4, L8)
    return one_block(f"{heads}    mask: \"{mask}\"\n    rope: {rope}\n{extra}",
                     dtype=dtype, inputs=inputs, seq=seq)


def _positions(batch: int, total: int, seed: int) -> np.ndarray:
    """Left-padded position ids [batch, total] (row r has r pads at position 1)."""
    rows = []
    for r in range(batch):
        pads = min(r + seed % 2, total)
        rows.append([1] * pads + list(range(total - pads)))
    return np.asarray(rows, np.int64)


def _feed(model, batch: int, seq: int, seed: int, past: int = 0):
    feed = random_inputs(model, {"batch": batch, "seq": seq}, seed=seed, past_len=past)
    if "pos" in feed:
        feed["pos"] = _positions(batch, past + seq, seed)[:, past:] + (seed % 3)
    return feed


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(variant, dtype, sparse):
    model = _model(variant, dtype, mask="causal & sliding(8)")
    options = CompileOptions(sparse=sparse, block_size=4)
    proto, explain = compile_with_explanations(model, None, options)
    assert explain[0].lowering == ("portable/dense" if sparse == "dense"
                                   else "portable/block-sparse band"), explain
    for seq in (1, 7):
        err = check_against_reference(model, _feed(model, 2, seq, seq), TOL[dtype],
                                      options=options, where=f"{variant} {dtype} {sparse} {seq}")
        ERRORS.record(f"ORT {dtype} {variant}", err)


@pytest.mark.parametrize("variant", ["dynamic", "longrope", "longrope-interleaved-positions"])
@pytest.mark.parametrize(("mask", "kind", "seq"), [("causal", "chunks", "dynamic"),
                                                   ("sliding(4) | global(3)", "tiles", "40")])
def test_block_sparse_strategies(variant, mask, kind, seq):
    model = _model(variant, mask=mask, seq=seq)
    options = CompileOptions(sparse="block", block_size=8)
    _, explain = compile_with_explanations(model, None, options)
    assert explain[0].lowering == f"portable/block-sparse {kind}", explain
    n = 13 if seq == "dynamic" else 40
    err = check_against_reference(model, _feed(model, 2, n, 1), 1e-5, options=options)
    ERRORS.record(f"ORT float32 {kind}", err)


def test_with_a_past_and_gqa_mqa():
    for variant in VARIANTS:
        for heads in ("    heads: 4\n    kv_heads: 1\n", "    heads: 6\n    kv_heads: 2\n"
                      "    head_dim: 8\n"):
            model = _model(variant, extra="    cache: true\n", heads=heads)
            for seq, past in ((1, 5), (3, 2)):
                err = check_against_reference(model, _feed(model, 2, seq, seq, past), 1e-5,
                                              where=(variant, seq, past))
                ERRORS.record("ORT float32 with a past", err)


CACHE_EXACT = ["linear", "llama3-interleaved", "yarn", "yarn-partial-dim", "plain-positions"]


@pytest.mark.parametrize("variant", [*CACHE_EXACT, "dynamic-below-m", "longrope-below-orig",
                                     "longrope-interleaved-positions"])
def test_cache_prefill_then_steps_equals_full_run(variant):
    total = 9
    text = VARIANTS.get(variant, "")
    if variant == "dynamic-below-m":  # total 9 <= M: the plain table throughout
        text = "{scaling: dynamic, factor: 3.0, max_position_embeddings: 9}"
    elif variant == "longrope-below-orig":
        text = VARIANTS["longrope"].replace("original_max_position_embeddings: 4",
                                            "original_max_position_embeddings: 9")
    elif variant == "longrope-interleaved-positions":  # positions <= 3 < original 4
        text = text.replace("original_max_position_embeddings: 4",
                            "original_max_position_embeddings: 12")
    inputs = POS_INPUT if "positions" in variant else ""
    model = one_block(f"    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: {text}\n"
                      "    cache: true\n", inputs=inputs)
    feed = random_inputs(model, {"batch": 2, "seq": total}, seed=3)
    if inputs:
        feed["pos"] = _positions(2, total, 1)
    errors = max_errors(model, decode_loop(model, compile_model(model), feed, prompt_len=4))
    ERRORS.record("cache: steps vs one full run", max(errors.values()))
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("variant", ["dynamic", "longrope"])
def test_cache_past_the_switch_length_differs_from_a_full_run(variant):
    """A graph computes each call's frequencies from its own run-time length (a fresh
    transformers module's forward). Cached keys keep the frequencies they were rotated with,
    so decoding across dynamic's M or longrope's original length cannot equal one full run
    (nor transformers' stateful dynamic module): documented in docs/language.md."""
    model = _model(variant, extra="    cache: true\n")
    feed = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    errors = max_errors(model, decode_loop(model, compile_model(model), feed, prompt_len=2))
    assert errors["y"] > 1e-3, errors


def test_cross_attention_run_time_length():
    """Without position ids the length is max(q_len, past + k_len): a query longer than the
    memory picks longrope's long table for the keys too."""
    for variant in ("longrope", "dynamic", "yarn"):
        model = parse_spec(one_block_yaml(
            f"    key_value: m\n    heads: 4\n    kv_heads: 2\n    rope: {VARIANTS[variant]}\n",
            dims="  mem: dynamic", inputs="  m: [batch, mem, d]"), "t.yaml")
        for sq, mem in ((7, 3), (2, 6)):
            feed = random_inputs(model, {"batch": 2, "seq": sq, "mem": mem}, seed=sq)
            err = check_against_reference(model, feed, 1e-5, where=(variant, sq, mem))
            ort = check_against_reference(model, feed, 1e-5, where=(variant, sq, mem),
                                          options=CompileOptions(target="ort"))
            ERRORS.record("ORT float32 cross-attention", max(err, ort))


def test_core_mode():
    model = parse_spec(one_block_yaml(
        "    project: false\n    heads: 4\n    mask: causal\n"
        f"    rope: {VARIANTS['longrope-interleaved-positions']}\n", inputs=POS_INPUT), "t.yaml")
    assert model.weight_shapes() == {}
    check_against_reference(model, _feed(model, 2, 6, 2), 1e-5)


def test_long_positions_float32_angles():
    """Graph angles are float32 products (as transformers'); the reference rounds only the
    frequencies. The error grows with the position: ~1e-7 below 1000, ~8e-6 near 1e5 here."""
    model = one_block("    heads: 4\n    mask: causal\n    rope: {positions: pos, "
                      "scaling: linear, factor: 2.0}\n", inputs=POS_INPUT)
    errors = {}
    for base in (0, 100_000):
        feed = _feed(model, 2, 7, 1)
        feed["pos"] = base + np.broadcast_to(np.arange(7), (2, 7)).astype(np.int64)
        errors[base] = check_against_reference(model, feed, 5e-5, where=base)
        ERRORS.record(f"ORT float32 positions near {base}", errors[base])
    assert errors[0] <= 1e-6


def test_int32_position_ids():
    model = one_block("    heads: 4\n    mask: causal\n    rope: {positions: pos, "
                      "scaling: dynamic, factor: 2.0, max_position_embeddings: 4}\n",
                      inputs="  pos: {shape: [batch, seq], dtype: int32}")
    feed = _feed(model, 2, 7, 2)
    feed["pos"] = feed["pos"].astype(np.int32)
    check_against_reference(model, feed, 1e-5)


def test_empty_positions():
    model = _model("longrope-interleaved-positions", extra="    cache: true\n")
    check_against_reference(model, _feed(model, 2, 0, 1, past=3), 1e-5)


# ------------------------------------------------------------------ the ort target

@pytest.mark.parametrize("variant", [v for v in VARIANTS if "positions" not in v])
@pytest.mark.parametrize(("head_dim", "dtype"), [(16, "float32"), (8, "float32"),
                                                 (16, "float16")])
def test_ort_target_feeds_the_scaled_caches_to_the_fused_kernels(variant, head_dim, dtype):
    model = _model(variant, dtype, extra="    cache: true\n",
                   heads=f"    heads: 4\n    kv_heads: 2\n    head_dim: {head_dim}\n")
    # --sparse dense keeps the fused kernel (under auto the cost model serves decode steps
    # portable: faster than GroupQueryAttention on CPU since issue 11's decode graphs)
    options = CompileOptions(target="ort", sparse="dense")
    proto, explain = compile_with_explanations(model, None, options)
    assert explain[0].lowering == "com.microsoft.GroupQueryAttention", explain
    rope = model.block("attn").rope
    fused = rope.dim % 16 == 0
    assert f"RoPE dim {rope.dim} {rope.scaling.rope_type}-scaled" in explain[0].reason
    assert ("(fused)" if fused else "com.microsoft.RotaryEmbedding") in explain[0].reason
    for seq, past in ((7, 0), (3, 5), (1, 6)):
        feed = _feed(model, 2, seq, seq, past)
        err = check_against_reference(model, feed, TOL[dtype], options=options,
                                      where=(variant, seq, past))
        ERRORS.record(f"ort target {dtype} ({'GQA rotary' if fused else 'RotaryEmbedding'})",
                      err)


def test_ort_target_falls_back_for_position_ids():
    model = _model("plain-positions", extra="    cache: true\n")
    options = CompileOptions(target="ort")
    _, explain = compile_with_explanations(model, None, options)
    assert explain[0].lowering.startswith("portable"), explain
    assert "explicit position ids" in explain[0].reason
    check_against_reference(model, _feed(model, 2, 3, 1, past=2), 1e-5, options=options)


# ------------------------------------------------------------------ IR, syntax, check

def test_ir_text_and_node():
    model = _model("longrope")
    r = model.block("attn").rope
    assert r.scaling.rope_type == "longrope" and r.scaling.short_factor == (1.0, 1.1, 1.2, 1.3)
    assert ("rope theta=10000.0, dim=8, interleaved=false, scaling=longrope, "
            "original_max_position_embeddings=4, max_position_embeddings=32, "
            "short_factor=[1.0, 1.1, 1.2, 1.3], long_factor=[1.0, 2.0, 5.0, 9.0]") \
        in print_ir(model)
    plain = one_block("    heads: 4\n    rope: true\n").block("attn").rope
    assert plain.scaling is None and plain.positions is None


def test_both_syntaxes_give_one_model():
    yaml_model = _model("longrope-interleaved-positions")
    dsl = """attndsl 1
model t
seed 0
dims batch = dynamic, seq = dynamic, d = 32
input x: [batch, seq, d]
input pos: int64[batch, seq]
block attn = attention(query = x) {
  heads 4, kv_heads 2
  mask causal
  rope interleaved = true, scaling = longrope, short_factor = [1.0, 1.1, 1.2, 1.3], \\
    long_factor = [1, 2.0, 5.0, 9.0], original_max_position_embeddings = 4, factor = 8.0, \\
    positions = pos
}
output y = attn
"""
    assert parse_spec(dsl, "t.attn") == yaml_model


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_through_both_writers(variant):
    inputs = POS_INPUT if "positions" in variant else ""
    text = one_block_yaml(f"    heads: 4\n    rope: {VARIANTS[variant]}\n", inputs=inputs)
    assert_round_trips(text)


def test_check_reports_the_scaling():
    report = format_summary(summarize(_model("yarn-partial-dim"), {"seq": 16}))
    assert "rope" in report and "theta=10000, dim=4, yarn x8 (cos/sin x1.2)" in report
    report = format_summary(summarize(_model("plain-positions"), {"seq": 16}))
    assert "theta=10000, dim=8, positions pos" in report


# ------------------------------------------------------------------ errors

def _err(rope: str, extra: str = "", inputs: str = "") -> str:
    return str(error_of(one_block_yaml(f"    heads: 4\n{extra}    rope: {rope}\n",
                                       inputs=inputs), "s.yaml"))


def test_bad_scaling_type_with_did_you_mean():
    msg = _err("{scaling: lama3, factor: 8.0}")
    assert "s.yaml:17:21: error: rope scaling must be one of linear, dynamic, llama3, yarn, " \
           "longrope, got 'lama3'" in msg
    assert "did you mean 'llama3'?" in msg


def test_missing_and_bad_options_point_at_their_values():
    msg = _err("{scaling: llama3, factor: 8.0, low_freq_factor: 1.0}")
    assert "s.yaml:17:21: error: rope scaling 'llama3' needs 'high_freq_factor'" in msg
    msg = _err("{scaling: linear, factor: 0.5}")
    assert "s.yaml:17:37: error: rope factor must be >= 1.0, got 0.5" in msg
    msg = _err(f"{{scaling: longrope, short_factor: [1.0, 1.1], long_factor: {F4}, "
               "original_max_position_embeddings: 4, factor: 2.0}")
    assert "s.yaml:17:45: error: rope short_factor must have dim/2 = 4 entries, got 2" in msg
    msg = _err("{scaling: llama3, factor: 8.0, low_freq_factor: 4.0, high_freq_factor: 1.0, "
               "original_max_position_embeddings: 16}")
    assert "high_freq_factor (1.0) must be greater than low_freq_factor (4.0)" in msg
    # found by tools/fuzz.py: a zero factor divided by zero, a negative beta took a log
    msg = _err("{scaling: llama3, factor: 8.0, low_freq_factor: 0, high_freq_factor: 4.0, "
               "original_max_position_embeddings: 16}")
    assert "rope low_freq_factor must be > 0.0, got 0" in msg
    msg = _err("{scaling: yarn, factor: 2.0, original_max_position_embeddings: 8, "
               "beta_slow: -1}")
    assert "rope beta_slow must be >= 0.0, got -1" in msg
    msg = _err("{scaling: yarn, factor: 2.0, original_max_position_embeddings: 8, "
               "low_freq_factor: 1.0}")
    assert "unknown key 'low_freq_factor' for scaling 'yarn'" in msg
    msg = _err("{scaling: longrope, short_factor: [1, x], long_factor: [1.0]}")
    assert "rope short_factor must be a list of numbers like [1.0, 1.5]" in msg


def test_scaling_options_need_a_scaling():
    msg = _err("{factor: 8.0}")
    assert "s.yaml:17:20: error: rope factor needs a scaling" in msg
    assert "add scaling: linear | dynamic | llama3 | yarn | longrope" in msg


def test_dynamic_needs_a_rotary_dim_above_two():
    msg = _err("{dim: 2, scaling: dynamic, factor: 2.0, max_position_embeddings: 8}")
    assert "dynamic NTK needs a rotary dim > 2" in msg


def test_position_ids_errors():
    msg = _err("{positions: ids}")
    assert "s.yaml:17:23: error: unknown input 'ids' in rope positions" in msg
    msg = _err("{positions: m}", inputs="  m: [batch, seq, d]")
    assert "rope positions needs a int64 or int32 input; 'm' is float32" in msg
    msg = _err("{positions: lens}", inputs="  lens: {shape: [batch], dtype: int64}")
    assert "rope positions needs an input of rank 2" in msg
    msg = _err("{positions: pos}", extra="    key_value: m\n",
               inputs=POS_INPUT + "\n  m: [batch, seq, d]")
    assert "rope positions need self-attention" in msg
    msg = _err("{positions: 3}")
    assert "rope positions must be a name" in msg


def test_dsl_errors_have_positions():
    text = one_block_yaml("    heads: 4\n    rope: {scaling: linear, factor: 0.5}\n")
    dsl = write_dsl(parse_source(Source(text, "t.yaml")))
    err = str(error_of(dsl, "s.attn"))
    line = next(i for i, t in enumerate(dsl.splitlines(), 1) if "factor = 0.5" in t)
    assert f"s.attn:{line}:" in err and "rope factor must be >= 1.0" in err


def test_rope_scaling_validation_is_the_spec_check():
    with pytest.raises(SpecError):
        RopeScaling.from_mapping({"rope_type": "linear", "factor": 0.5})
