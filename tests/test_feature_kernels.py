"""The float64 feature kernels against transformers' own attention modules.

Each test builds the transformers 5.23.0 module from a tiny config (hidden 64, eager attention),
fills every parameter (norm weights, sinks and lambdas too) with random non-zero values, runs it
in float64 and compares ``attndsl.features.kernels`` with its output: max abs error <= 1e-12.

transformers hard-codes float32 in many places (``x.to(torch.float32)`` in every RMSNorm,
``softmax(..., dtype=torch.float32)``, ``position_ids.float()``...): an upcast for float16 models
but a downcast for a float64 one. The modules therefore run under :class:`Float64`, a
``TorchFunctionMode`` that turns every float32 request into float64 -- the arithmetic is still
transformers' own code; only the precision changes. ``test_transformers_downcasts_in_float64``
shows what happens without it. RoPE cos/sin are passed in (``position_embeddings``), built from
the same float64 angles the kernels use, since RoPE scaling is not part of these kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.overrides import TorchFunctionMode  # noqa: E402

from attndsl.features import kernels as K  # noqa: E402

TOL = 1e-12
SEQS = (1, 7, 33)
B = 2


class Float64(TorchFunctionMode):
    """Every float32 dtype request (``.float()``, ``.to(torch.float32)``, ``dtype=`` arguments)
    becomes float64, so transformers' low-precision upcasts keep float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.float:
            return args[0].to(torch.float64)

        def sub(a):
            return torch.float64 if a is torch.float32 else a

        return func(*(sub(a) for a in args), **{k: sub(v) for k, v in kwargs.items()})


def round_to_float32(module, prefix: str = "") -> dict[str, np.ndarray]:
    """Round a float64 module's parameters to float32 values (kept float64: the reference
    rounds a float32 model's weights so) and return them as a weight dict, names prefixed."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.float().double())
    return {f"{prefix}{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _randomise(module, seed: int) -> dict[str, np.ndarray]:
    """Random non-zero parameters (norm-like 1-D weights around 1), module in float64."""
    g = torch.Generator().manual_seed(seed)
    module.double().eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if "norm" in name or "layernorm" in name:
                p.copy_(1.0 + 0.3 * r)  # Gemma-style (1 + w) weights are then ~2: still fine
            elif name.startswith("lambda_"):
                p.copy_(0.3 * r)
            elif name == "sinks":
                p.copy_(r)
            else:
                p.copy_(r * (0.5 / math.sqrt(p.shape[-1])))
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _config(cls, **kw):
    c = cls(**kw)
    c._attn_implementation = "eager"
    return c


def _inputs(s: int, width: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, s, width))
    pos = np.broadcast_to(np.arange(s), (B, s)).copy()
    allowed = np.broadcast_to(np.tril(np.ones((s, s), bool)), (B, 1, s, s)).copy()
    return x, pos, allowed


def _additive(allowed: np.ndarray):
    """transformers' eager mask: 0 where allowed, the dtype's minimum elsewhere."""
    a = np.broadcast_to(allowed, (allowed.shape[0], 1) + allowed.shape[2:])
    return torch.from_numpy(np.where(a, 0.0, np.finfo(np.float64).min))


def _inv_freq(dim: int, theta: float) -> np.ndarray:
    return 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def _cos_sin_half(angles: np.ndarray):
    """Llama-style ``cat(freqs, freqs)`` cos/sin."""
    emb = np.concatenate([angles, angles], axis=-1)
    return torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb))


def _run(module, x: np.ndarray, pe, allowed: np.ndarray, **kw) -> np.ndarray:
    with torch.no_grad(), Float64():
        out = module(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                     attention_mask=_additive(allowed), **kw)[0]
    assert out.dtype == torch.float64
    return out.numpy()


def _err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)))


# --------------------------------------------------------------------------- QK-norm


@pytest.mark.parametrize("s", SEQS)
def test_qwen3_rms_qk_norm_per_head_shared_weight(s):
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3Config

    cfg = _config(Qwen3Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, attention_bias=True, rms_norm_eps=1e-6)
    m = Qwen3Attention(cfg, 0)
    w = _randomise(m, 1)
    assert w["q_norm.weight"].shape == (16,)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 10000.0)
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), norm=K.QKNorm("rms", 1e-6))
    assert _err(got, ref) <= TOL


@pytest.mark.parametrize("s", SEQS)
def test_gemma3_rms_qk_norm_offset_one(s):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3Attention, Gemma3TextConfig

    cfg = _config(Gemma3TextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                  head_dim=16, query_pre_attn_scalar=24, rms_norm_eps=1e-6, num_hidden_layers=1)
    m = Gemma3Attention(cfg, 0)
    w = _randomise(m, 2)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 10000.0)
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=1, head_dim=16, positions=pos,
                            allowed=allowed, scale=24 ** -0.5, rope=K.Rope(inv),
                            norm=K.QKNorm("rms", 1e-6, offset=1.0))
    assert _err(got, ref) <= TOL


@pytest.mark.parametrize("s", SEQS)
def test_olmo2_rms_qk_norm_over_whole_width(s):
    from transformers.models.olmo2.modeling_olmo2 import Olmo2Attention, Olmo2Config

    cfg = _config(Olmo2Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  rms_norm_eps=1e-5)
    m = Olmo2Attention(cfg, 0)
    w = _randomise(m, 3)
    assert w["q_norm.weight"].shape == (64,) and w["k_norm.weight"].shape == (32,)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 10000.0)
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv),
                            norm=K.QKNorm("rms", 1e-5, scope="width"))
    assert _err(got, ref) <= TOL


@pytest.mark.parametrize("s", SEQS)
def test_cohere_layer_qk_norm_per_head_weight_interleaved_rope(s):
    from transformers.models.cohere.modeling_cohere import CohereAttention, CohereConfig

    cfg = _config(CohereConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  use_qk_norm=True, layer_norm_eps=1e-5)
    m = CohereAttention(cfg, 0)
    w = _randomise(m, 4)
    assert w["q_norm.weight"].shape == (4, 16) and w["k_norm.weight"].shape == (2, 16)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 10000.0)
    ang = K.rope_angles(pos, inv)
    emb = np.repeat(ang, 2, axis=-1)  # Cohere interleaves cos/sin
    pe = (torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
    ref = _run(m, x, pe, allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv, "interleaved"),
                            norm=K.QKNorm("layer", 1e-5))
    assert _err(got, ref) <= TOL


@pytest.mark.parametrize("s", SEQS)
def test_stablelm_layer_norm_per_head_modules_partial_rope(s):
    from transformers.models.stablelm.modeling_stablelm import StableLmAttention, StableLmConfig

    cfg = _config(StableLmConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  qk_layernorm=True, use_qkv_bias=True, layer_norm_eps=1e-5)
    m = StableLmAttention(cfg, 0)
    w = _randomise(m, 5)
    # one nn.LayerNorm(D, bias=False) per head: stack them into the [H, D] weight
    w["q_norm.weight"] = np.stack([w[f"q_layernorm.norms.{h}.weight"] for h in range(4)])
    w["k_norm.weight"] = np.stack([w[f"k_layernorm.norms.{h}.weight"] for h in range(2)])
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(4, 10000.0)  # partial_rotary_factor 0.25 of head_dim 16
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), norm=K.QKNorm("layer", 1e-5))
    assert _err(got, ref) <= TOL


def _llama4(layer_idx: int, seed: int, **kw):
    from transformers.models.llama4.modeling_llama4 import Llama4TextAttention, Llama4TextConfig

    cfg = _config(Llama4TextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=2, no_rope_layers=[1, 0], rms_norm_eps=1e-5,
                  use_qk_norm=True, **kw)
    m = Llama4TextAttention(cfg, layer_idx)
    return cfg, m, _randomise(m, seed)


@pytest.mark.parametrize("s", SEQS)
def test_llama4_l2_norm_after_interleaved_rope(s):
    _, m, w = _llama4(0, 6)
    assert m.use_rope and hasattr(m, "qk_norm")
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 500000.0)
    freqs_cis = torch.polar(torch.ones(B, s, 8, dtype=torch.float64),
                            torch.from_numpy(K.rope_angles(pos, inv)))
    ref = _run(m, x, freqs_cis, allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv, "interleaved"),
                            norm=K.QKNorm("l2", 1e-5, after_rope=True))
    assert _err(got, ref) <= TOL


def test_norm_primitives_match_the_module_formulas():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama4.modeling_llama4 import Llama4TextL2Norm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 16)) * 3.0
    wt = 1.0 + 0.3 * rng.standard_normal(16)
    with torch.no_grad(), Float64():
        g = Gemma3RMSNorm(16, eps=1e-6).double()
        g.weight.copy_(torch.from_numpy(wt))
        o = Olmo2RMSNorm(16, eps=1e-5).double()
        o.weight.copy_(torch.from_numpy(wt))
        ln = torch.nn.LayerNorm(16, eps=1e-5).double()
        ln.weight.copy_(torch.from_numpy(wt))
        ln.bias.copy_(torch.from_numpy(wt - 1.0))
        t = torch.from_numpy(x)
        refs = [g(t).numpy(), o(t).numpy(), Llama4TextL2Norm(1e-6)(t).numpy(), ln(t).numpy()]
    assert _err(K.rms_norm(x, wt, 1e-6, offset=1.0), refs[0]) <= TOL
    assert _err(K.rms_norm(x, wt, 1e-5), refs[1]) <= TOL
    assert _err(K.l2_norm(x, 1e-6), refs[2]) <= TOL
    assert _err(K.layer_norm(x, wt, wt - 1.0, 1e-5), refs[3]) <= TOL


# --------------------------------------------------------------------------- sinks


def _gpt_oss(seed: int):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssConfig

    cfg = _config(GptOssConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=2, attention_bias=True)
    m = GptOssAttention(cfg, 1)
    return m, _randomise(m, seed)


def _gpt_oss_pe(pos: np.ndarray, inv: np.ndarray):
    ang = K.rope_angles(pos, inv)  # gpt-oss passes the half-width cos/sin
    return torch.from_numpy(np.cos(ang)), torch.from_numpy(np.sin(ang))


@pytest.mark.parametrize("s", SEQS)
def test_gpt_oss_sinks(s):
    m, w = _gpt_oss(7)
    assert w["sinks"].shape == (4,)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(16, 150000.0)
    ref = _run(m, x, _gpt_oss_pe(pos, inv), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), sinks=True)
    assert _err(got, ref) <= TOL


def test_gpt_oss_sinks_fully_masked_rows_output_zero():
    m, w = _gpt_oss(8)
    s = 9
    x, pos, _ = _inputs(s, 64, 3)
    rng = np.random.default_rng(5)
    allowed = rng.random((B, 1, s, s)) < 0.4
    allowed[0, 0, 2] = False  # fully masked rows
    allowed[1, 0, 0] = False
    allowed[1, 0, 7] = False
    inv = _inv_freq(16, 150000.0)
    ref = _run(m, x, _gpt_oss_pe(pos, inv), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), sinks=True)
    assert _err(got, ref) <= TOL
    # a fully masked row attends to nothing but the sink: the layer outputs o_proj's bias
    for b, r in ((0, 2), (1, 0), (1, 7)):
        assert np.array_equal(got[b, r], w["o_proj.bias"])


def test_softmax_plus_one_is_a_zero_sink():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4, 5)) * 4
    allowed = rng.random((2, 1, 4, 5)) < 0.6
    allowed[0, 0, 1] = False
    p = K.softmax_with_sink(logits, allowed, 0.0)
    e = np.where(allowed, np.exp(logits), 0.0)
    assert _err(p, e / (1.0 + e.sum(-1, keepdims=True))) <= TOL
    assert not p[0, :, 1].any()
    sinks = rng.standard_normal(3)
    ps = K.softmax_with_sink(logits, allowed, sinks)
    es = np.exp(sinks)[None, :, None]
    assert _err(ps, e / (es[..., None] + e.sum(-1, keepdims=True))) <= TOL


# --------------------------------------------------------------------------- output gate


@pytest.mark.parametrize("s", SEQS)
def test_qwen3_next_output_gate(s):
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        Qwen3NextAttention,
        Qwen3NextConfig,
    )

    cfg = _config(Qwen3NextConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=1, layer_types=["full_attention"],
                  rms_norm_eps=1e-6)
    m = Qwen3NextAttention(cfg, 0)
    w = _randomise(m, 9)
    assert w["q_proj.weight"].shape == (4 * 2 * 16, 64)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(4, 10000.0)  # partial_rotary_factor 0.25
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), gated_query=True,
                            norm=K.QKNorm("rms", 1e-6, offset=1.0))
    assert _err(got, ref) <= TOL


def test_gated_query_rows_are_per_head_query_then_gate():
    h, d = 3, 4
    rows = np.arange(h * 2 * d, dtype=np.float64)  # q_proj output = its row index
    q, g = K.split_gated_query(rows.reshape(1, 1, -1), h, d)
    for head in range(h):
        assert list(q[0, 0, head * d:(head + 1) * d]) == list(rows[2 * d * head:][:d])
        assert list(g[0, 0, head * d:(head + 1) * d]) == list(rows[2 * d * head + d:][:d])


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("s", SEQS)
def test_llama4_temperature_on_nope_layer(s):
    _, m, w = _llama4(1, 10, floor_scale=4, attn_scale=0.3)
    assert not m.use_rope and not hasattr(m, "qk_norm")
    x, pos, allowed = _inputs(s, 64, s)
    ref = _run(m, x, None, allowed)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, temperature=(0.3, 4.0))
    assert _err(got, ref) <= TOL


def test_llama4_temperature_reads_cache_position_not_position_ids():
    from transformers.cache_utils import DynamicCache

    cfg, m, w = _llama4(1, 11, floor_scale=3, attn_scale=0.2)
    past, s = 6, 5
    x, _, _ = _inputs(past + s, 64, 12)
    full = np.tril(np.ones((past + s, past + s), bool))[None, None]
    cache = DynamicCache(config=cfg)
    _run(m, x[:, :past], None, full[..., :past, :past], past_key_values=cache)
    ref = _run(m, x[:, past:], None, full[..., past:, :], past_key_values=cache)
    # position_ids are irrelevant to the temperature: the kernel gets bogus RoPE positions
    bogus = np.zeros((B, past + s), np.int64)
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=bogus,
                            allowed=full, temperature=(0.2, 3.0))[:, past:]
    assert _err(got, ref) <= TOL
    scales = K.llama4_attn_scales(np.arange(past, past + s), 0.2, 3.0)
    assert np.allclose(scales, 1 + 0.2 * np.log(np.floor((np.arange(past, past + s) + 1) / 3)
                                                 + 1))


# --------------------------------------------------------------------------- MLA


def _mla(q_lora_rank, rope_interleave, yarn, seed):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3Config,
    )

    rp = {"rope_type": "default", "rope_theta": 10000.0}
    if yarn:
        rp = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "mscale": 0.7,
              "mscale_all_dim": 0.7, "original_max_position_embeddings": 64,
              "beta_fast": 32.0, "beta_slow": 1.0}
    cfg = _config(DeepseekV3Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                  q_lora_rank=q_lora_rank, kv_lora_rank=24, qk_nope_head_dim=12,
                  qk_rope_head_dim=8, v_head_dim=10, rope_interleave=rope_interleave,
                  rope_parameters=rp, attention_bias=True, num_hidden_layers=1,
                  max_position_embeddings=256)
    m = DeepseekV3Attention(cfg, 0)
    w = _randomise(m, seed)
    c = K.MLAConfig(heads=4, kv_lora_rank=24, qk_nope_head_dim=12, qk_rope_head_dim=8,
                    v_head_dim=10, q_lora_rank=q_lora_rank, rope_interleave=rope_interleave,
                    scale=K.mla_softmax_scale(20, rp))
    return m, w, c


MLA_CASES = [(r, i, y) for r in (None, 16) for i in (True, False) for y in (False, True)]


@pytest.mark.parametrize("q_lora_rank,interleave,yarn", MLA_CASES)
@pytest.mark.parametrize("s", SEQS)
def test_deepseek_v3_mla(s, q_lora_rank, interleave, yarn):
    m, w, c = _mla(q_lora_rank, interleave, yarn, 13 + s)
    assert abs(c.softmax_scale - m.scaling) <= 1e-15
    x, pos, allowed = _inputs(s, 64, s)
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, c.rope_inv_freq())), allowed)
    got, lat, kr = K.mla_attention(x, w, c, pos, allowed)
    assert lat.shape == (B, s, 24) and kr.shape == (B, s, 8)
    assert _err(got, ref) <= TOL
    absorbed, lat2, kr2 = K.mla_attention_absorbed(x, w, c, pos, allowed)
    assert _err(absorbed, got) <= TOL
    assert np.array_equal(lat, lat2) and np.array_equal(kr, kr2)


@pytest.mark.parametrize("q_lora_rank,interleave", [(None, True), (16, False)])
def test_mla_latent_cache_decode_matches_transformers_cache(q_lora_rank, interleave):
    from transformers.cache_utils import DynamicCache

    m, w, c = _mla(q_lora_rank, interleave, True, 40)
    past, steps = 7, 3
    t = past + steps
    x, pos, _ = _inputs(t, 64, 41)
    full = np.tril(np.ones((t, t), bool))[None, None]
    pe = _cos_sin_half(K.rope_angles(pos, c.rope_inv_freq()))
    cache = DynamicCache(config=m.config)
    _run(m, x[:, :past], tuple(p[:, :past] for p in pe), full[..., :past, :past],
         past_key_values=cache)
    _, lat, kr = K.mla_attention(x[:, :past], w, c, pos[:, :past], full[..., :past, :past])
    layer = cache.layers[0]  # transformers caches the normalised latent and the rotated key
    assert _err(lat, layer.keys[:, 0].numpy()) <= TOL
    assert _err(kr, layer.values[:, 0].numpy()) <= TOL
    for i in range(past, t):
        ref = _run(m, x[:, i:i + 1], tuple(p[:, i:i + 1] for p in pe), full[..., i:i + 1, :i + 1],
                   past_key_values=cache)
        plain, _, _ = K.mla_attention(x[:, i:i + 1], w, c, pos[:, i:i + 1],
                                      full[..., i:i + 1, :i + 1], lat, kr)
        got, lat, kr = K.mla_attention_absorbed(x[:, i:i + 1], w, c, pos[:, i:i + 1],
                                                full[..., i:i + 1, :i + 1], lat, kr)
        assert _err(plain, ref) <= TOL and _err(got, ref) <= TOL


def test_deepseek_interleave_is_a_row_permutation_then_half_rope():
    """DeepSeek's interleaved RoPE equals plain rotate-half RoPE of ``[x_even | x_odd]``: a
    compiler may fold the permutation into the rope rows of the projections instead."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 8))
    ang = K.rope_angles(np.arange(5)[None].repeat(2, 0), _inv_freq(8, 10000.0))
    perm = np.concatenate([np.arange(0, 8, 2), np.arange(1, 8, 2)])
    assert _err(K.apply_rope(x, ang, "deinterleave"), K.apply_rope(x[..., perm], ang)) == 0.0


def test_yarn_mscale_formula():
    assert K.yarn_get_mscale(1.0, 0.7) == 1.0
    assert K.yarn_get_mscale(40.0, 1.0) == 0.1 * math.log(40.0) + 1.0
    rp = {"rope_type": "yarn", "factor": 40.0, "mscale_all_dim": 1.0}
    assert K.mla_softmax_scale(192, rp) == 192 ** -0.5 * (0.1 * math.log(40.0) + 1.0) ** 2
    assert K.mla_softmax_scale(192, {**rp, "mscale_all_dim": 0}) == 192 ** -0.5


# --------------------------------------------------------------------------- DIFF attention


@pytest.mark.parametrize("layer_idx,heads,kv_heads", [(0, 4, 2), (3, 8, 2), (5, 4, 4)])
@pytest.mark.parametrize("s", SEQS)
def test_diffllama(s, layer_idx, heads, kv_heads):
    from transformers.models.diffllama.modeling_diffllama import (
        DiffLlamaAttention,
        DiffLlamaConfig,
    )

    cfg = _config(DiffLlamaConfig, hidden_size=64, num_attention_heads=heads,
                  num_key_value_heads=kv_heads, head_dim=8, rms_norm_eps=1e-5,
                  num_hidden_layers=layer_idx + 1)
    m = DiffLlamaAttention(cfg, layer_idx)
    w = _randomise(m, 20 + layer_idx)
    assert m.lambda_init == K.diff_lambda_init(layer_idx)
    x, pos, allowed = _inputs(s, 64, s)
    inv = _inv_freq(8, 10000.0)
    ref = _run(m, x, _cos_sin_half(K.rope_angles(pos, inv)), allowed)
    got = K.diff_attention_layer(x, w, heads=heads, kv_heads=kv_heads, head_dim=8,
                                 layer_idx=layer_idx, positions=pos, allowed=allowed,
                                 rope=K.Rope(inv), eps=1e-5)
    assert _err(got, ref) <= TOL


# --------------------------------------------------------------------------- why Float64


def test_transformers_downcasts_in_float64():
    """Without the float64 mode, a ``.double()`` module still rounds its norms and softmax to
    float32: the difference to the float64 kernel is at float32 level, not 1e-12."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3Config

    cfg = _config(Qwen3Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16)
    m = Qwen3Attention(cfg, 0)
    w = _randomise(m, 30)
    x, pos, allowed = _inputs(7, 64, 31)
    inv = _inv_freq(16, 10000.0)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), _cos_sin_half(K.rope_angles(pos, inv)),
                _additive(allowed))[0].numpy()
    got = K.attention_layer(x, w, heads=4, kv_heads=2, head_dim=16, positions=pos,
                            allowed=allowed, rope=K.Rope(inv), norm=K.QKNorm("rms", 1e-6))
    assert 1e-10 < _err(got, ref) < 1e-4

