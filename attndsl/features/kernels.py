"""Float64 numpy reference kernels for the attention of today's open models (issue 8).

Each kernel is written from Hugging Face transformers' modeling code (version 5.23.0), which is
the definition wherever a paper and the code differ; the docstring of each names the class it
reproduces and gives the formula. ``tests/test_feature_kernels.py`` builds those very modules
from tiny configs and checks every kernel against them in float64 (max abs error <= 1e-12).

Layouts are the compiler's: hidden states ``[B, S, width]``; per-head tensors ``[B, H, S, D]``;
PyTorch ``Linear`` weights ``[out, in]`` (``y = x @ W.T + b``); weight dicts use the checkpoint
names of the transformers attention module without the layer prefix (``"q_proj.weight"``).
Masks are boolean ``allowed`` arrays broadcastable to ``[B, H, Sq, Sk]`` (True = may attend).
A query row with no allowed key outputs 0 (the convention of ``attndsl.reference``); with a
sink that is also what transformers computes.

Everything is computed in float64. transformers computes several steps in float32 whatever the
model dtype (the "upcast" meant for float16 / bfloat16 models); a compiler emitting a float16
graph must put its casts at the same points. In transformers 5.23.0 (eager path):

* RoPE angles and cos/sin: float32, then cast to the model dtype (all models); Cohere and
  Llama 4 also rotate q and k in float32 (``q.float()``) and cast back.
* RMSNorm: normalised in float32; the weight is applied after casting back (Qwen3, DeepSeek
  V3, DiffLlama's model norms), in float32 before casting back (OLMo 2), or as ``(1 + w)`` in
  float32 (Gemma 3, Qwen3-Next). Cohere's LayerNorm: all float32. StableLM's ``nn.LayerNorm``
  and DiffLlama's weightless ``nn.RMSNorm``: torch's kernels in the model dtype. Llama 4's
  L2 norm: float32, cast back.
* Softmax: float32 then cast back (Qwen3, Gemma 3, OLMo 2, Cohere, StableLM, Qwen3-Next,
  DeepSeek V3, DiffLlama); model dtype (Llama 4; gpt-oss with sinks, after subtracting the row
  max including the sink).
* Llama 4 temperature scales and DiffLlama's lambda: float32 scalars; Llama 4 multiplies the
  float16 query by them in float32 and casts back.

Only numpy and the standard library are used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Weights = Mapping[str, np.ndarray]


# --------------------------------------------------------------------------- basic pieces


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """PyTorch ``nn.Linear``: ``x @ weight.T + bias`` with ``weight`` ``[out, in]``."""
    y = np.asarray(x, np.float64) @ np.asarray(weight, np.float64).T
    return y if bias is None else y + np.asarray(bias, np.float64)


def _lin(x: np.ndarray, w: Weights, name: str) -> np.ndarray:
    """Apply the checkpoint Linear ``name`` (bias used when the dict holds one)."""
    return linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """``[B, S, heads*D]`` -> ``[B, heads, S, D]`` (transformers' ``view(...).transpose(1, 2)``)."""
    b, s, f = x.shape
    return x.reshape(b, s, heads, f // heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """``[B, H, S, D]`` -> ``[B, S, H*D]``."""
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free for large negative inputs."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# --------------------------------------------------------------------------- 1. QK-norm


def rms_norm(x: np.ndarray, weight: np.ndarray | None = None, eps: float = 1e-6,
             offset: float = 0.0) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x**2) + eps) * (offset + weight)``.

    ``offset=0`` is Llama / Qwen3 / OLMo 2 / DeepSeek (``Qwen3RMSNorm``, ``Olmo2RMSNorm``,
    ``DeepseekV3RMSNorm``: weight initialised to ones); ``offset=1`` is Gemma 3 / Qwen3-Next
    (``Gemma3RMSNorm``, ``Qwen3NextRMSNorm``: ``(1 + w)``, weight initialised to zeros).
    ``weight=None`` is the weightless form (``nn.RMSNorm(elementwise_affine=False)``, DiffLlama's
    group norm; Llama 4's ``L2Norm``, see :func:`l2_norm`). ``weight`` broadcasts against ``x``.

    float16 casts in transformers (the float64 result here is the same for all of them):
    Qwen3 / DeepSeek / DiffLlama: ``w * (x.float() * rsqrt(...)).to(input_dtype)`` -- weight
    applied AFTER casting back; OLMo 2: ``(w * x.float() * rsqrt(...)).to(input_dtype)`` --
    weight applied in float32 before casting back; Gemma 3 / Qwen3-Next: ``(norm(x.float()) *
    (1 + w.float())).type_as(x)`` -- offset added and multiplied in float32.
    """
    x = np.asarray(x, np.float64)
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    if weight is None:
        return y if offset == 0.0 else y * offset
    return y * (offset + np.asarray(weight, np.float64))


def layer_norm(x: np.ndarray, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
               eps: float = 1e-5) -> np.ndarray:
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Biased variance (``mean((x - mean)**2)``), as ``nn.LayerNorm`` and ``CohereLayerNorm``.
    Cohere (``CohereLayerNorm``) has no bias and a weight ``[H, D]`` (one row per head), computed
    entirely in float32 (``w.float() * norm(x.float())`` then cast back); StableLM
    (``StableLmLayerNormPerHead``) holds one ``nn.LayerNorm(D, bias=False)`` per head, i.e. the
    same maths with weight ``[H, D]`` stored as ``norms.{h}.weight``.
    """
    x = np.asarray(x, np.float64)
    mu = np.mean(x, axis=-1, keepdims=True)
    c = x - mu
    y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def l2_norm(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Llama 4's ``Llama4TextL2Norm``: ``x * rsqrt(mean(x**2) + eps)`` over the last axis.

    Despite the name it divides by the root MEAN square, not the L2 norm (they differ by
    ``sqrt(D)``), and has no weight; transformers computes it in float32 (``x.float()``) and
    casts back (``type_as(x)``). Llama 4 applies it after RoPE, on RoPE layers only, with
    ``eps = config.rms_norm_eps``.
    """
    return rms_norm(x, None, eps)


@dataclass(frozen=True)
class QKNorm:
    """How queries and keys are normalised.

    kind: ``"rms"``, ``"layer"`` or ``"l2"``. scope: ``"head"`` normalises each head over
    ``head_dim`` (weights ``[D]`` shared by all heads, or ``[H, D]`` one per head); ``"width"``
    normalises the whole projected width before the head split (OLMo 2, weights ``[H*D]`` and
    ``[G*D]``). after_rope: apply after RoPE (Llama 4) instead of before (everyone else).
    offset: RMSNorm's ``offset + w`` (Gemma 3 / Qwen3-Next: 1).
    """

    kind: str = "rms"
    eps: float = 1e-6
    scope: str = "head"
    offset: float = 0.0
    after_rope: bool = False


def qk_norm(x: np.ndarray, norm: QKNorm, weight: np.ndarray | None = None,
            bias: np.ndarray | None = None) -> np.ndarray:
    """Normalise queries or keys.

    ``x`` is ``[B, H, S, D]`` for scope ``"head"`` and ``[B, S, H*D]`` for scope ``"width"``.
    A per-head weight ``[H, D]`` (Cohere, StableLM) is applied head by head; a ``[D]`` weight is
    shared (Qwen3 ``q_norm``/``k_norm``, Gemma 3).
    """
    if weight is not None and norm.scope == "head" and np.ndim(weight) == 2:
        weight = np.asarray(weight)[:, None, :]  # [H, 1, D] against [B, H, S, D]
    if bias is not None and norm.scope == "head" and np.ndim(bias) == 2:
        bias = np.asarray(bias)[:, None, :]
    if norm.kind == "rms":
        return rms_norm(x, weight, norm.eps, norm.offset)
    if norm.kind == "layer":
        return layer_norm(x, weight, bias, norm.eps)
    if norm.kind == "l2":
        return l2_norm(x, norm.eps)
    raise ValueError(f"unknown QK-norm kind {norm.kind!r}")


# --------------------------------------------------------------------------- RoPE application


def rope_angles(positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Angles ``pos * inv_freq`` in float64: ``positions`` ``[B, S]`` or ``[S]`` -> ``[.., S, F]``.

    transformers computes these in float32 (``position_ids.float() * inv_freq.float()``) in
    every ``*RotaryEmbedding.forward`` and casts cos/sin to the model dtype; rope scaling (the
    inverse frequencies and the ``attention_scaling`` factor) is not part of these kernels.
    """
    return np.asarray(positions, np.float64)[..., None] * np.asarray(inv_freq, np.float64)


def apply_rope(x: np.ndarray, angles: np.ndarray, layout: str = "half",
               attention_scaling: float = 1.0) -> np.ndarray:
    """Rotate the first ``2 * F`` features of ``x`` ``[B, H, S, D]`` by ``angles`` ``[B, S, F]``.

    layout ``"half"``: Llama's ``rotate_half`` (pairs ``(i, i + F)``; also gpt-oss's
    ``_apply_rotary_emb`` and the partial rotary of StableLM / Qwen3-Next). ``"interleaved"``:
    pairs ``(2i, 2i + 1)``, output kept interleaved (Cohere's ``rotate_half``, Llama 4's complex
    ``apply_rotary_emb``). ``"deinterleave"``: DeepSeek's ``apply_rotary_pos_emb_interleave``:
    pairs ``(2i, 2i + 1)`` are rotated and the result is written de-interleaved,
    ``[x0' x2' x4' ... | x1' x3' x5' ...]`` -- the cached rope key is in that layout.
    ``attention_scaling`` multiplies cos and sin (rope scaling's attention factor).
    """
    cos = np.cos(angles)[:, None] * attention_scaling
    sin = np.sin(angles)[:, None] * attention_scaling
    f = cos.shape[-1]
    rot, rest = x[..., : 2 * f], x[..., 2 * f:]
    if layout == "half":
        a, b = rot[..., :f], rot[..., f:]
        out = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    elif layout in ("interleaved", "deinterleave"):
        a, b = rot[..., 0::2], rot[..., 1::2]
        ra, rb = a * cos - b * sin, b * cos + a * sin
        if layout == "deinterleave":
            out = np.concatenate([ra, rb], axis=-1)
        else:
            out = np.stack([ra, rb], axis=-1).reshape(rot.shape)
    else:
        raise ValueError(f"unknown RoPE layout {layout!r}")
    return np.concatenate([out, rest], axis=-1)


# --------------------------------------------------------------------------- 2. softmax, sinks


def masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Softmax over the last axis restricted to ``allowed``; a row with no allowed key is 0."""
    allowed = np.broadcast_to(allowed, logits.shape)
    s = np.where(allowed, logits, -np.inf)
    row_ok = allowed.any(axis=-1, keepdims=True)
    m = np.where(row_ok, s.max(axis=-1, keepdims=True, initial=-np.inf), 0.0)
    e = np.where(allowed, np.exp(s - m), 0.0)
    return e / np.where(row_ok, e.sum(axis=-1, keepdims=True), 1.0)


def softmax_with_sink(logits: np.ndarray, allowed: np.ndarray,
                      sink_logit_per_head: np.ndarray | float) -> np.ndarray:
    """Softmax over the allowed keys plus one virtual key of logit ``sink`` and value 0.

    ``p_j = exp(l_j - m) / (exp(sink_h - m) + sum_{allowed k} exp(l_k - m))`` with
    ``m = max(sink_h, max_allowed l)``; the sink's own probability is dropped, so rows sum to
    less than 1 and a fully masked row is all zeros (output 0). ``sink_logit_per_head`` is
    ``[H]`` (gpt-oss ``GptOssAttention.sinks``, used by its ``eager_attention_forward`` as
    ``s_aux``) or a constant (0.0 is "softmax plus one"). ``logits`` is ``[B, H, Sq, Sk]``.

    gpt-oss's eager path runs this softmax in the model dtype (``dtype=combined_logits.dtype``,
    no float32 upcast), after subtracting the row max including the sink.
    """
    logits = np.asarray(logits, np.float64)
    allowed = np.broadcast_to(allowed, logits.shape)
    sink = np.asarray(sink_logit_per_head, np.float64)
    sink = np.broadcast_to(sink.reshape((1, -1, 1, 1)) if sink.ndim == 1 else sink,
                           logits.shape[:-1] + (1,))
    s = np.where(allowed, logits, -np.inf)
    m = np.maximum(s.max(axis=-1, keepdims=True, initial=-np.inf), sink)
    e = np.where(allowed, np.exp(s - m), 0.0)
    return e / (e.sum(axis=-1, keepdims=True) + np.exp(sink - m))


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray, scale: float,
           sinks: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scaled dot-product attention with GQA: ``q`` ``[B, H, Sq, D]``, ``k`` ``[B, G, Sk, D]``,
    ``v`` ``[B, G, Sk, Dv]``; query head ``h`` reads kv head ``h // (H / G)`` (``repeat_kv``).
    Returns (output ``[B, H, Sq, Dv]``, probabilities ``[B, H, Sq, Sk]``)."""
    group = q.shape[1] // k.shape[1]
    kh, vh = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = (q @ kh.transpose(0, 1, 3, 2)) * scale
    p = masked_softmax(s, allowed) if sinks is None else softmax_with_sink(s, allowed, sinks)
    return p @ vh, p


# --------------------------------------------------------------------------- 3. output gate


def split_gated_query(q_proj_out: np.ndarray, heads: int, head_dim: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Qwen3-Next's gated ``q_proj`` (``Qwen3NextAttention``, weight ``[H * 2D, hidden]``).

    The rows are laid out per head, ``[q_0; g_0; q_1; g_1; ...]`` (each ``D`` rows): transformers
    does ``torch.chunk(q.view(B, S, H, 2D), 2, dim=-1)``. Returns (query ``[B, S, H*D]``,
    gate ``[B, S, H*D]``) both in head-major order.
    """
    b, s, _ = q_proj_out.shape
    qg = q_proj_out.reshape(b, s, heads, 2 * head_dim)
    q = qg[..., :head_dim].reshape(b, s, heads * head_dim)
    g = qg[..., head_dim:].reshape(b, s, heads * head_dim)
    return q, g


def output_gate(attn: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """``attn * sigmoid(gate)`` on the merged heads ``[B, S, H*D]``, before ``o_proj``."""
    return attn * sigmoid(gate)


# --------------------------------------------------------------------------- 4. temperature


def llama4_attn_scales(positions: np.ndarray, attn_scale: float, floor_scale: float
                       ) -> np.ndarray:
    """Llama 4 query temperature (``Llama4TextAttention``, ``attn_temperature_tuning``).

    ``scale(pos) = log(floor((pos + 1) / floor_scale) + 1) * attn_scale + 1``; the query of the
    token at ``pos`` is multiplied by it, on NoPE layers only (``no_rope_layers[i] == 0``),
    before the head transpose and with no QK-norm on those layers. ``pos`` is the cache position
    ``past_seen_tokens + arange(S)``, NOT ``position_ids`` (left padding does not shift it).
    transformers computes the scale in float32 (``positions.float()``) whatever the model dtype.
    """
    p = np.asarray(positions, np.float64)
    return np.log1p(np.floor((p + 1.0) / floor_scale)) * attn_scale + 1.0


# --------------------------------------------------------------------------- generic layer


@dataclass(frozen=True)
class Rope:
    """RoPE as these kernels apply it: angles per position, layout, attention factor.

    ``inv_freq`` has ``rotary_dim / 2`` entries (partial rotary when shorter than ``D / 2``).
    """

    inv_freq: np.ndarray
    layout: str = "half"
    attention_scaling: float = 1.0


def attention_layer(x: np.ndarray, w: Weights, *, heads: int, kv_heads: int, head_dim: int,
                    positions: np.ndarray, allowed: np.ndarray, scale: float | None = None,
                    rope: Rope | None = None, norm: QKNorm | None = None,
                    sinks: bool | float = False, gated_query: bool = False,
                    temperature: tuple[float, float] | None = None,
                    cache_positions: np.ndarray | None = None) -> np.ndarray:
    """One self-attention layer with the optional features of issue 8, in transformers' order.

    project (``q_proj``/``k_proj``/``v_proj``, biases if present) -> gate split
    (``gated_query``: Qwen3-Next) -> width QK-norm (OLMo 2) -> head split -> head QK-norm
    (Qwen3, Gemma 3, Cohere, StableLM, Qwen3-Next) -> RoPE -> QK-norm after RoPE (Llama 4) ->
    temperature (Llama 4 NoPE layers: ``temperature = (attn_scale, floor_scale)``) -> attention
    with sinks (``sinks=True``: per-head ``w["sinks"]``, gpt-oss; a float: a constant sink) ->
    merge heads -> ``* sigmoid(gate)`` -> ``o_proj``.

    Norm weights come from ``q_norm.weight``/``k_norm.weight`` (and ``.bias``). ``positions``
    ``[B, S]`` feed RoPE; ``cache_positions`` ``[S]`` (default ``arange(S)``: this layer has no
    cache) feed the temperature, as in transformers (never ``position_ids``). ``scale``
    defaults to ``head_dim ** -0.5``.
    """
    x = np.asarray(x, np.float64)
    q = _lin(x, w, "q_proj")
    gate = None
    if gated_query:
        q, gate = split_gated_query(q, heads, head_dim)
    k, v = _lin(x, w, "k_proj"), _lin(x, w, "v_proj")
    qw, kw = w.get("q_norm.weight"), w.get("k_norm.weight")
    qb, kb = w.get("q_norm.bias"), w.get("k_norm.bias")
    if norm is not None and norm.scope == "width":
        q, k = qk_norm(q, norm, qw, qb), qk_norm(k, norm, kw, kb)
    q, k, v = split_heads(q, heads), split_heads(k, kv_heads), split_heads(v, kv_heads)
    if norm is not None and norm.scope == "head" and not norm.after_rope:
        q, k = qk_norm(q, norm, qw, qb), qk_norm(k, norm, kw, kb)
    if rope is not None:
        ang = rope_angles(positions, rope.inv_freq)
        q = apply_rope(q, ang, rope.layout, rope.attention_scaling)
        k = apply_rope(k, ang, rope.layout, rope.attention_scaling)
    if norm is not None and norm.scope == "head" and norm.after_rope:
        q, k = qk_norm(q, norm, qw, qb), qk_norm(k, norm, kw, kb)
    if temperature is not None:
        cp = np.arange(x.shape[1]) if cache_positions is None else cache_positions
        q = q * llama4_attn_scales(cp, *temperature)[None, None, :, None]
    sink: np.ndarray | float | None = None
    if sinks is True:
        sink = w["sinks"]
    elif sinks is not False:
        sink = float(sinks)
    o, _ = attend(q, k, v, allowed, head_dim ** -0.5 if scale is None else scale, sink)
    o = merge_heads(o)
    if gate is not None:
        o = output_gate(o, gate)
    return _lin(o, w, "o_proj")


# --------------------------------------------------------------------------- 5. MLA


def yarn_get_mscale(scale: float = 1.0, mscale: float = 1.0) -> float:
    """DeepSeek's ``yarn_get_mscale``: ``0.1 * mscale * ln(scale) + 1`` if ``scale > 1``, else 1."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def mla_softmax_scale(qk_head_dim: int, rope_parameters: Mapping[str, object] | None = None
                      ) -> float:
    """``DeepseekV3Attention.scaling``: ``qk_head_dim**-0.5``, times ``mscale**2`` with
    ``mscale = yarn_get_mscale(factor, mscale_all_dim)`` when ``rope_type`` is not ``default``
    and ``mscale_all_dim`` is non-zero (``yarn_apply_mscale``)."""
    s = qk_head_dim ** -0.5
    rp = rope_parameters or {}
    if rp.get("rope_type", "default") != "default":
        mad = float(rp.get("mscale_all_dim", 0) or 0)  # type: ignore[arg-type]
        if mad:
            m = yarn_get_mscale(float(rp["factor"]), mad)  # type: ignore[arg-type]
            s = s * m * m
    return s


@dataclass(frozen=True)
class MLAConfig:
    """The shape of a DeepSeek V2/V3 Multi-head Latent Attention layer.

    Checkpoint weights (``DeepseekV3Attention``): with ``q_lora_rank``: ``q_a_proj`` ``[r_q,
    hidden]`` (+ bias if ``attention_bias``), ``q_a_layernorm.weight`` ``[r_q]``, ``q_b_proj``
    ``[H * (dn + dr), r_q]``; without: ``q_proj`` ``[H * (dn + dr), hidden]``. Always:
    ``kv_a_proj_with_mqa`` ``[r_kv + dr, hidden]`` (+ bias), ``kv_a_layernorm.weight`` ``[r_kv]``,
    ``kv_b_proj`` ``[H * (dn + dv), r_kv]`` (per head: ``dn`` k_nope rows then ``dv`` v rows),
    ``o_proj`` ``[hidden, H * dv]`` (+ bias). Both RMSNorms use eps 1e-6 (transformers builds
    them with the class default, not ``config.rms_norm_eps``).
    """

    heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None
    rope_interleave: bool = True
    scale: float | None = None  # default qk_head_dim ** -0.5; see mla_softmax_scale
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    inv_freq: tuple[float, ...] | None = None  # overrides rope_theta (scaled RoPE)
    rope_attention_scaling: float = 1.0

    @property
    def qk_head_dim(self) -> int:
        """``qk_nope_head_dim + qk_rope_head_dim``."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def rope_inv_freq(self) -> np.ndarray:
        """The ``qk_rope_head_dim / 2`` inverse frequencies (``inv_freq`` or the default)."""
        if self.inv_freq is not None:
            return np.asarray(self.inv_freq, np.float64)
        d = self.qk_rope_head_dim
        return 1.0 / self.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)

    @property
    def softmax_scale(self) -> float:
        """The scale the scores are multiplied with."""
        return self.qk_head_dim ** -0.5 if self.scale is None else self.scale


def _mla_query(x: np.ndarray, w: Weights, c: MLAConfig, angles: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(q_nope ``[B, H, S, dn]``, q_rope ``[B, H, S, dr]`` after RoPE)."""
    if c.q_lora_rank is None:
        q = _lin(x, w, "q_proj")
    else:
        qa = rms_norm(_lin(x, w, "q_a_proj"), w["q_a_layernorm.weight"], c.norm_eps)
        q = _lin(qa, w, "q_b_proj")
    q = split_heads(q, c.heads)
    q_nope, q_rope = q[..., : c.qk_nope_head_dim], q[..., c.qk_nope_head_dim:]
    layout = "deinterleave" if c.rope_interleave else "half"
    return q_nope, apply_rope(q_rope, angles, layout, c.rope_attention_scaling)


def mla_latent(x: np.ndarray, w: Weights, c: MLAConfig, angles: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """What an MLA cache stores per token: (normalised latent ``[B, S, r_kv]``, rope key
    ``[B, S, dr]`` after RoPE -- in DeepSeek's de-interleaved layout when ``rope_interleave``).

    ``kv_a_proj_with_mqa(x)`` is split ``[r_kv, dr]``; the latent goes through
    ``kv_a_layernorm`` (RMSNorm) BEFORE it is cached, the rope part is rotated before it is
    cached; one rope key is shared by all heads.
    """
    ckv = _lin(x, w, "kv_a_proj_with_mqa")
    lat, k_rope = ckv[..., : c.kv_lora_rank], ckv[..., c.kv_lora_rank:]
    lat = rms_norm(lat, w["kv_a_layernorm.weight"], c.norm_eps)
    layout = "deinterleave" if c.rope_interleave else "half"
    k_rope = apply_rope(k_rope[:, None], angles, layout, c.rope_attention_scaling)[:, 0]
    return lat, k_rope


def _mla_cache(x: np.ndarray, w: Weights, c: MLAConfig, angles: np.ndarray,
               past_latent: np.ndarray | None, past_rope: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    lat, k_rope = mla_latent(x, w, c, angles)
    if past_latent is not None:
        lat = np.concatenate([np.asarray(past_latent, np.float64), lat], axis=1)
        k_rope = np.concatenate([np.asarray(past_rope, np.float64), k_rope], axis=1)
    return lat, k_rope


def _kv_b(w: Weights, c: MLAConfig) -> tuple[np.ndarray, np.ndarray]:
    """``kv_b_proj.weight`` ``[H*(dn+dv), r_kv]`` as (W_uk ``[H, dn, r]``, W_uv ``[H, dv, r]``)."""
    wkv = np.asarray(w["kv_b_proj.weight"], np.float64).reshape(
        c.heads, c.qk_nope_head_dim + c.v_head_dim, c.kv_lora_rank)
    return wkv[:, : c.qk_nope_head_dim], wkv[:, c.qk_nope_head_dim:]


def mla_attention(x: np.ndarray, w: Weights, c: MLAConfig, positions: np.ndarray,
                  allowed: np.ndarray, past_latent: np.ndarray | None = None,
                  past_rope: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-head Latent Attention, plain form (``DeepseekV3Attention.forward``).

    ``q = q_b_proj(RMSNorm(q_a_proj(x)))`` (or ``q_proj(x)``) split per head into
    ``[q_nope (dn) | q_rope (dr)]``; ``[c | k_r] = kv_a_proj_with_mqa(x)``, ``c = RMSNorm(c)``;
    ``[k_nope_h | v_h] = kv_b_proj(c)`` per head; ``k_h = [k_nope_h | RoPE(k_r)]`` (the rope key
    broadcast to all heads), ``q_h = [q_nope_h | RoPE(q_rope_h)]``;
    ``o = o_proj(concat_h softmax(q_h . k_h * scale) v_h)``.

    ``positions`` ``[B, S]`` of the new tokens; ``past_latent``/``past_rope`` the cache
    (``[B, P, r_kv]``, ``[B, P, dr]``); ``allowed`` broadcasts to ``[B, H, S, P + S]``.
    Returns (output ``[B, S, hidden]``, latent cache, rope cache) with the new tokens appended.
    """
    x = np.asarray(x, np.float64)
    angles = rope_angles(positions, c.rope_inv_freq())
    q_nope, q_rope = _mla_query(x, w, c, angles)
    lat, k_rope = _mla_cache(x, w, c, angles, past_latent, past_rope)
    kv = split_heads(linear(lat, w["kv_b_proj.weight"]), c.heads)  # [B, H, T, dn + dv]
    k_nope, v = kv[..., : c.qk_nope_head_dim], kv[..., c.qk_nope_head_dim:]
    k = np.concatenate(
        [k_nope, np.broadcast_to(k_rope[:, None], k_nope.shape[:-1] + (c.qk_rope_head_dim,))],
        axis=-1)
    q = np.concatenate([q_nope, q_rope], axis=-1)
    o, _ = attend(q, k, v, allowed, c.softmax_scale)
    return _lin(merge_heads(o), w, "o_proj"), lat, k_rope


def mla_attention_absorbed(x: np.ndarray, w: Weights, c: MLAConfig, positions: np.ndarray,
                           allowed: np.ndarray, past_latent: np.ndarray | None = None,
                           past_rope: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-head Latent Attention, absorbed (decode) form; equal to :func:`mla_attention`.

    With ``W_uk_h`` ``[dn, r]`` and ``W_uv_h`` ``[dv, r]`` the rows of ``kv_b_proj`` of head h:
    ``q_nope_h . k_nope_h(t) = (q_nope_h W_uk_h) . c_t``, so the query is absorbed into the
    latent space, ``q_lat_h = q_nope_h W_uk_h`` ``[B, H, S, r]``, and scores are
    ``(q_lat_h . c_t + q_rope_h . k_r(t)) * scale`` over the cache itself (latent ``[B, T, r]``
    plus rope key ``[B, T, dr]``, one for all heads: MQA with key width ``r + dr``);
    ``sum_t p_t v_h(t) = (sum_t p_t c_t) W_uv_h^T``, so the value side is applied after the
    weighted sum of latents. No per-head K or V is ever materialised.
    Same arguments and returns as :func:`mla_attention`.
    """
    x = np.asarray(x, np.float64)
    angles = rope_angles(positions, c.rope_inv_freq())
    q_nope, q_rope = _mla_query(x, w, c, angles)
    lat, k_rope = _mla_cache(x, w, c, angles, past_latent, past_rope)
    w_uk, w_uv = _kv_b(w, c)
    q_lat = np.einsum("bhsn,hnr->bhsr", q_nope, w_uk)
    s = (q_lat @ lat[:, None].transpose(0, 1, 3, 2)
         + q_rope @ k_rope[:, None].transpose(0, 1, 3, 2)) * c.softmax_scale
    p = masked_softmax(s, allowed)  # [B, H, S, T]
    o_lat = p @ lat[:, None]  # [B, H, S, r]
    o = np.einsum("bhsr,hvr->bhsv", o_lat, w_uv)
    return _lin(merge_heads(o), w, "o_proj"), lat, k_rope


# --------------------------------------------------------------------------- 6. DIFF attention


def diff_lambda_init(layer_idx: int) -> float:
    """DiffLlama's ``lambda_init_fn``: ``0.8 - 0.6 * exp(-0.3 * layer_idx)``, ``layer_idx``
    0-based (the paper's ``l - 1`` with ``l`` from 1)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


def diff_lambda(w: Weights, lambda_init: float) -> float:
    """``exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + lambda_init``.

    Each of the four vectors is ``[head_dim]``, shared by all heads of the layer; transformers
    sums the products in float32 (``dtype=torch.float32``) and casts to the query dtype.
    """
    def e(a: str, b: str) -> float:
        return math.exp(float(np.sum(np.asarray(w[a], np.float64) * np.asarray(w[b], np.float64))))
    return e("lambda_q1", "lambda_k1") - e("lambda_q2", "lambda_k2") + lambda_init


def diff_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray,
                   scale: float, lam: float, lambda_init: float, eps: float) -> np.ndarray:
    """Differential attention core as ``DiffLlamaAttention`` computes it; returns ``[B, S, H*D]``
    (the ``o_proj`` input).

    ``q`` ``[B, H, S, D]``, ``k``/``v`` ``[B, G, S, D]`` after RoPE, ``H`` and ``G`` even. Heads
    pair up by HALVES of the head axis: pair ``j < H/2`` takes the maps of query heads ``j`` and
    ``j + H/2`` (each with its own kv head ``g(h) = h // (H/G)``, standard GQA) and the value of
    width ``2D`` ``V_j = [v_{g(j)} | v_{g(j) + G/2}]`` (kv heads of the two halves side by side):
    ``o_j = (1 - lambda_init) * RMSNorm_2D((P_j - lam * P_{j+H/2}) V_j)``, RMSNorm weightless with
    ``eps = config.rms_norm_eps`` over the ``2D`` features; pairs are concatenated in order.
    """
    h, g = q.shape[1], k.shape[1]
    _, p = attend(q, k, np.zeros(k.shape[:-1] + (1,)), allowed, scale)  # maps only
    qpk = h // g
    pairs = []
    for j in range(h // 2):
        gj = j // qpk
        vj = np.concatenate([v[:, gj], v[:, gj + g // 2]], axis=-1)  # [B, S, 2D]
        pd = p[:, j] - lam * p[:, j + h // 2]
        pairs.append((1.0 - lambda_init) * rms_norm(pd @ vj, None, eps))
    return np.concatenate(pairs, axis=-1)


def diff_attention_layer(x: np.ndarray, w: Weights, *, heads: int, kv_heads: int,
                         head_dim: int, layer_idx: int, positions: np.ndarray,
                         allowed: np.ndarray, rope: Rope | None, eps: float) -> np.ndarray:
    """A whole ``DiffLlamaAttention`` layer: Llama projections and RoPE, then
    :func:`diff_attention` with ``lam = diff_lambda(w, diff_lambda_init(layer_idx))`` and
    ``scale = head_dim ** -0.5``, then ``o_proj``."""
    x = np.asarray(x, np.float64)
    q = split_heads(_lin(x, w, "q_proj"), heads)
    k = split_heads(_lin(x, w, "k_proj"), kv_heads)
    v = split_heads(_lin(x, w, "v_proj"), kv_heads)
    if rope is not None:
        ang = rope_angles(positions, rope.inv_freq)
        q = apply_rope(q, ang, rope.layout, rope.attention_scaling)
        k = apply_rope(k, ang, rope.layout, rope.attention_scaling)
    li = diff_lambda_init(layer_idx)
    o = diff_attention(q, k, v, allowed, head_dim ** -0.5, diff_lambda(w, li), li, eps)
    return _lin(o, w, "o_proj")
