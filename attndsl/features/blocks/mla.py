"""``mla``: Multi-head Latent Attention (DeepSeek V2 / V3, Kimi K2), as transformers'
``DeepseekV3Attention`` computes it (``features/kernels.py``: ``mla_attention``,
``mla_attention_absorbed``).

``mla: {kv_lora_rank: 512, q_lora_rank: 1536, qk_nope_head_dim: 128, qk_rope_head_dim: 64,
v_head_dim: 128, rope_interleave: true, absorb: cache, factor: 1.0, mscale_all_dim: 0}``
on a block with ``heads: H``, ``head_dim: dn + dr``, ``v_head_dim: dv`` and ``rope: {theta:
..., dim: dr}`` (the block's RoPE rotates the ``dr`` rope features; its ``interleaved``
stays false: ``rope_interleave`` is DeepSeek's layout). Per token:

- ``q = q_b_proj(RMSNorm(q_a_proj(x)))`` (``q_lora_rank``) or ``q_proj(x)``, per head
  ``[q_nope (dn) | q_rope (dr)]``;
- ``[c | k_r] = kv_a_proj_with_mqa(x)``, ``c = RMSNorm(c)`` (the latent, ``kv_lora_rank``
  wide), ``k_r`` one rope key shared by all heads; both RMSNorms use eps 1e-6 (transformers
  builds them with the class default);
- ``[k_nope_h | v_h] = kv_b_proj(c)`` per head; ``k_h = [k_nope_h | RoPE(k_r)]``, ``q_h =
  [q_nope_h | RoPE(q_rope_h)]``; ``softmax(q_h . k_h * scale) v_h``, ``o_proj``.

``rope_interleave: true`` rotates the rope features as DeepSeek does: pairs ``(2i, 2i+1)``,
written de-interleaved (``[x_even | x_odd]`` then a rotation in halves): the engine applies
that row permutation before the block's RoPE. ``scale`` is the block's (``head_dim ** -0.5``
by default) times ``m ** 2`` with ``m = 0.1 * mscale_all_dim * ln(factor) + 1`` when
``factor > 1`` and ``mscale_all_dim`` is non-zero (DeepSeek's YaRN ``yarn_get_mscale``; give
the checkpoint's ``rope_scaling.factor`` / ``mscale_all_dim``).

Cache (``cache: true``): the normalised latent ``<block>.past_latent`` ``[B, T,
kv_lora_rank]`` and the rotated rope key ``<block>.past_rope`` ``[B, T, dr]``, not per-head K
and V (``present_latent`` / ``present_rope`` out). ``absorb`` picks how the block attends:
``cache`` (default) absorbs ``kv_b_proj`` when the block has a cache and computes the plain
per-head K / V otherwise; ``always`` / ``never`` force one form. Absorbed: ``q_lat_h = q_nope_h
W_uk_h`` ``[B, H, S, r]``, the scores ``q_lat_h . c_t + q_rope_h . k_r(t)`` are MQA over the
cache itself (one kv head of width ``r + dr``, values the latent, width ``r``), and ``W_uv_h``
is applied after the weighted sum: no per-head K / V of the past is materialised. The choice
is static because the query length is dynamic: decoding (one query over a long cache)
wants the absorbed form, a long prefill without a cache the plain one (its attention reads
``dn + dr + dv`` features per cell instead of ``2r + dr``); a cached block that also
prefills long prompts can set ``absorb: never``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, CacheLayout, Option

NORM_EPS = 1e-6  # DeepseekV3RMSNorm's default; transformers ignores config.rms_norm_eps here
ABSORB = ("cache", "always", "never")


@dataclass(frozen=True, slots=True)
class MLA(BlockNode):
    kv_lora_rank: int = 512
    q_lora_rank: int = 0  # 0: one q_proj
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rope_interleave: bool = True
    absorb: str = "cache"
    factor: float = 1.0
    mscale_all_dim: float = 0.0
    span: Span | None = span_field()

    @property
    def mscale(self) -> float:
        """DeepSeek's ``yarn_get_mscale(factor, mscale_all_dim)`` (1 without YaRN)."""
        if self.factor <= 1 or not self.mscale_all_dim:
            return 1.0
        return 0.1 * self.mscale_all_dim * math.log(self.factor) + 1.0


def absorbed(n: MLA, block) -> bool:
    """Whether ``block`` attends in the absorbed form (``absorb`` and the block's cache)."""
    return n.absorb == "always" or (n.absorb == "cache" and block.cache)


def rope_order(n: MLA) -> np.ndarray:
    """The order the rope features are read in before the block's RoPE (in halves):
    ``[0, 2, 4, .., 1, 3, ..]`` for DeepSeek's interleaved layout, else as they are."""
    d = n.qk_rope_head_dim
    if n.rope_interleave:
        return np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    return np.arange(d)


def query_order(n: MLA) -> np.ndarray:
    """Per head, the checkpoint's ``[nope | rope]`` features reordered to what the engine
    runs with, ``[rope (rope_order) | nope]``: the block's RoPE rotates the first ``dr``."""
    return np.concatenate([n.qk_nope_head_dim + rope_order(n), np.arange(n.qk_nope_head_dim)])


def _w(block, name: str) -> str:
    return f"{block.name}.{name}"


def _weights(n: MLA, block) -> dict[str, tuple[int, ...]]:
    h, dn, dr, dv = block.heads, n.qk_nope_head_dim, n.qk_rope_head_dim, n.v_head_dim
    out: dict[str, tuple[int, ...]] = {}
    if n.q_lora_rank:
        out[_w(block, "q_a_proj.weight")] = (n.q_lora_rank, block.width_q)
        if block.bias:
            out[_w(block, "q_a_proj.bias")] = (n.q_lora_rank,)
        out[_w(block, "q_a_layernorm.weight")] = (n.q_lora_rank,)
        out[_w(block, "q_b_proj.weight")] = (h * (dn + dr), n.q_lora_rank)
    else:
        out[_w(block, "q_proj.weight")] = (h * (dn + dr), block.width_q)
    out[_w(block, "kv_a_proj_with_mqa.weight")] = (n.kv_lora_rank + dr, block.width_kv)
    if block.bias:
        out[_w(block, "kv_a_proj_with_mqa.bias")] = (n.kv_lora_rank + dr,)
    out[_w(block, "kv_a_layernorm.weight")] = (n.kv_lora_rank,)
    out[_w(block, "kv_b_proj.weight")] = (h * (dn + dv), n.kv_lora_rank)
    return out


def _init(name: str, shape: tuple[int, ...], rng) -> np.ndarray:
    """Norm weights ``1 + N(0, 0.1)``; Linear weights PyTorch's range U(+-1/sqrt(in))."""
    if name.endswith("layernorm.weight"):
        return 1.0 + 0.1 * rng.standard_normal(shape)
    fan_in = shape[-1] if name.endswith(".weight") else shape[0]
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def _cache(n: MLA, block) -> CacheLayout:
    return CacheLayout(entries=(("latent", n.kv_lora_rank), ("rope", n.qk_rope_head_dim)),
                       kv=(1, n.qk_rope_head_dim, n.kv_lora_rank))


# ------------------------------------------------------------------ reference (float64)


def _rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + NORM_EPS) * w


def _lin(st, x: np.ndarray, name: str, bias: bool = False) -> np.ndarray:
    y = x @ st.weight(f"{name}.weight").T
    return y + st.weight(f"{name}.bias") if bias else y


def _ref_project(n: MLA, st):
    b = st.block
    if n.q_lora_rank:
        qa = _rms(_lin(st, st.xq, _w(b, "q_a_proj"), b.bias),
                  st.weight(_w(b, "q_a_layernorm.weight")))
        q = _lin(st, qa, _w(b, "q_b_proj"))
    else:
        q = _lin(st, st.xq, _w(b, "q_proj"))
    bsz, s = q.shape[:2]
    q = q.reshape(bsz, s, b.heads, -1)[..., query_order(n)].reshape(bsz, s, -1)
    ckv = _lin(st, st.xk, _w(b, "kv_a_proj_with_mqa"), b.bias)
    r = n.kv_lora_rank
    lat = _rms(ckv[..., :r], st.weight(_w(b, "kv_a_layernorm.weight")))
    return q, ckv[..., r:][..., rope_order(n)], lat


def _kv_b(n: MLA, st) -> tuple[np.ndarray, np.ndarray]:
    """(W_uk [H, dn, r], W_uv [H, dv, r]) from ``kv_b_proj.weight``."""
    b = st.block
    w = st.weight(_w(b, "kv_b_proj.weight")).reshape(b.heads, -1, n.kv_lora_rank)
    return w[:, :n.qk_nope_head_dim], w[:, n.qk_nope_head_dim:]


def _ref_cache(n: MLA, st):
    b = st.block
    rope, lat = st.k[:, 0], st.v[:, 0]  # [B, S, dr] rotated, [B, S, r]
    if b.cache:
        rope = np.concatenate([st.past["rope"], rope], axis=1)
        lat = np.concatenate([st.past["latent"], lat], axis=1)
    present = {"latent": lat, "rope": rope} if b.cache else {}
    dr = n.qk_rope_head_dim
    q = st.q * n.mscale ** 2
    w_uk, w_uv = _kv_b(n, st)
    if absorbed(n, b):
        q_lat = np.einsum("bhsn,hnr->bhsr", q[..., dr:], w_uk)
        st.q = np.concatenate([q[..., :dr], q_lat], axis=-1)
        st.k = np.concatenate([rope, lat], axis=-1)[:, None]
        st.v = lat[:, None]
        return present, dataclasses.replace(b, kv_heads=1, head_dim=dr + n.kv_lora_rank,
                                            v_head_dim=n.kv_lora_rank)
    k_nope = np.einsum("btr,hnr->bhtn", lat, w_uk)
    st.q = q
    st.k = np.concatenate(
        [np.broadcast_to(rope[:, None], k_nope.shape[:-1] + (dr,)), k_nope], axis=-1)
    st.v = np.einsum("btr,hvr->bhtv", lat, w_uv)
    return present, b


def _ref_attended(n: MLA, st) -> None:
    if absorbed(n, st.block):  # o_lat [B, H, S, r] -> o [B, H, S, dv]
        st.o = np.einsum("bhsr,hvr->bhsv", st.o, _kv_b(n, st)[1])


# ------------------------------------------------------------------ portable lowering


def _normalise(st, x: str, weight: str) -> str:
    """DeepseekV3RMSNorm of x (model dtype) in float32, back in the model dtype."""
    g = st.g
    x = st.to_float32(x)
    ms = g.reduce("ReduceMean", g.mul(x, x), [-1])
    y = g.div(x, g.op("Sqrt", g.add(ms, g.scalar(NORM_EPS, np.float32))))
    return st.to_model_dtype(g.mul(y, st.float32(weight)))


def _linear(st, x: str, name: str, bias: bool = False) -> str:
    return st.linear(x, name, bias)


def _port_project(n: MLA, st):
    b, g = st.block, st.g
    xq, xkv = st.low.streams[b.query], st.low.streams[b.key]
    with g.scope("mla"):
        if n.q_lora_rank:
            qa = _normalise(st, _linear(st, xq, _w(b, "q_a_proj"), b.bias),
                            _w(b, "q_a_layernorm.weight"))
            q = _linear(st, qa, _w(b, "q_b_proj"))
        else:
            q = _linear(st, xq, _w(b, "q_proj"))
        width = n.qk_nope_head_dim + n.qk_rope_head_dim
        q = g.gather(g.reshape(q, [0, 0, b.heads, width]), g.const(query_order(n), np.int64),
                     axis=3)
        q = g.reshape(q, [0, 0, b.heads * width])
        ckv = _linear(st, xkv, _w(b, "kv_a_proj_with_mqa"), b.bias)
        r, dr = n.kv_lora_rank, n.qk_rope_head_dim
        lat = _normalise(st, g.slice(ckv, [0], [r], [2]), _w(b, "kv_a_layernorm.weight"))
        rope = g.slice(ckv, [r], [r + dr], [2])
        if n.rope_interleave:
            rope = g.gather(rope, g.const(rope_order(n), np.int64), axis=2)
        return q, rope, lat


def _port_kv_b(n: MLA, st) -> tuple[str, str]:
    """(W_uk [H, dn, r], W_uv [H, dv, r]) float32, from ``kv_b_proj.weight`` (constant)."""
    b, g = st.block, st.g

    def build() -> tuple[str, str]:
        w = g.reshape(st.float32(_w(b, "kv_b_proj.weight")), [b.heads, -1, n.kv_lora_rank])
        dn = n.qk_nope_head_dim
        return (g.slice(w, [0], [dn], [1]),
                g.slice(w, [dn], [dn + n.v_head_dim], [1]))

    return st.memo(("mla_kv_b", b.name), build)


def _port_cache(n: MLA, st):
    b, g = st.block, st.g
    dr, r = n.qk_rope_head_dim, n.kv_lora_rank
    with g.scope("mla"):
        # what is cached, in the model dtype; the attention reads the stored values, so a
        # step with a cache computes what a step without one would
        rope = st.to_model_dtype(g.op("Squeeze", st.k, g.i64(1)))  # [B, S, dr]
        lat = g.op("Squeeze", st.v, g.i64(1))  # [B, S, r]
        present: dict[str, str] = {}
        if b.cache:
            rope = g.concat([f"{b.name}.past_rope", rope], axis=1)
            lat = g.concat([f"{b.name}.past_latent", lat], axis=1)
            present = {"latent": lat, "rope": rope}
        rope32 = st.to_float32(rope)
        q = st.q
        if n.mscale != 1.0:
            q = g.mul(q, g.scalar(n.mscale ** 2, np.float32))
        q_rope, q_nope = g.slice(q, [0], [dr], [3]), g.slice(q, [dr], [b.head_dim], [3])
        if absorbed(n, b):
            w_uk, _ = _port_kv_b(n, st)
            st.q = g.concat([q_rope, g.matmul(q_nope, w_uk)], axis=-1)  # [B, H, S, dr + r]
            st.k = g.unsqueeze(g.concat([rope32, st.to_float32(lat)], axis=-1), [1])
            st.v = g.unsqueeze(lat, [1])
            return present, dataclasses.replace(b, kv_heads=1, head_dim=dr + r, v_head_dim=r)
        kv = _linear(st, lat, _w(b, "kv_b_proj"))  # [B, T, H * (dn + dv)]
        kv = g.transpose(g.reshape(kv, [0, 0, b.heads, n.qk_nope_head_dim + n.v_head_dim]),
                         [0, 2, 1, 3])
        k_nope = st.to_float32(g.slice(kv, [0], [n.qk_nope_head_dim], [3]))
        shape = g.concat([g.shape(k_nope, 0, 3), g.i64(dr)], axis=0)
        st.q = q
        st.k = g.concat([g.op("Expand", g.unsqueeze(rope32, [1]), shape), k_nope], axis=-1)
        st.v = g.slice(kv, [n.qk_nope_head_dim], [n.qk_nope_head_dim + n.v_head_dim], [3])
        return present, b


def _port_attended(n: MLA, st) -> None:
    if absorbed(n, st.block):  # o_lat [B, H, S, r] @ W_uv^T [H, r, dv]
        g = st.g
        with g.scope("mla"):
            st.o = g.matmul(st.o, g.transpose(_port_kv_b(n, st)[1], [0, 2, 1]))


# ------------------------------------------------------------------ build


def _rope_dim(ctx) -> tuple[int | None, object]:
    """(the block's rope dim as written or None, the rope setting) for the cross-checks."""
    st = ctx.settings.get("rope")
    if st is None or not isinstance(st.value, tuple):
        return None, st
    dim = next((kw.value for kw in st.value if kw.key == "dim"), None)
    return (dim if isinstance(dim, int) and not isinstance(dim, bool) else None), st


def _make(values: dict[str, object], ctx) -> MLA | None:
    ok = True

    def bad(msg: str, span, hint: str | None = None) -> None:
        nonlocal ok
        ok = False
        ctx.err(msg, span, hint)

    if not ctx.project:
        bad("mla replaces the block's projections, so it needs project: true", ctx.span(None),
            "drop 'project: false' (mla's weights are the projections)")
        return None
    r = values["kv_lora_rank"]
    if r is None:
        bad("mla needs kv_lora_rank (the latent width)", ctx.span(None),
            "add kv_lora_rank, e.g. mla: {kv_lora_rank: 512, ...}")
    rope_dim, rope = _rope_dim(ctx)
    dr = values["qk_rope_head_dim"] if values["qk_rope_head_dim"] is not None else rope_dim
    if rope is None or rope.value is False:
        bad("mla needs the block's rope (its theta and the rotated features)", ctx.span(None),
            f"add rope: {{theta: 10000.0, dim: {dr or 64}}}")
    elif dr is None or rope_dim != dr:
        bad(f"mla rotates qk_rope_head_dim = {dr} features per head: the block's rope dim "
            f"must say so", rope.span, f"set rope: {{dim: {dr}}}" if dr else
            "set rope dim (and mla qk_rope_head_dim) to the rope width, e.g. 64")
    elif any(kw.key == "interleaved" and kw.value is True for kw in rope.value):
        bad("with mla the block's rope rotates in halves; DeepSeek's interleaved pairs are mla's "
            "rope_interleave", rope.span, "drop rope interleaved; mla rope_interleave: true "
            "is the default")
    if ctx.kv_heads != ctx.heads:
        bad(f"mla has one key and value per query head (kv_heads = heads = {ctx.heads}), "
            f"got kv_heads {ctx.kv_heads}", ctx.span(None), "drop kv_heads")
    if "qk_norm" in ctx.settings and ctx.settings["qk_norm"].value is not False:
        bad("mla normalises its own latent; qk_norm does not apply to it",
            ctx.settings["qk_norm"].span, "drop qk_norm")
    if not ok:
        return None
    dn = values["qk_nope_head_dim"]
    dn = ctx.head_dim - dr if dn is None else dn
    if dn < 1 or dn + dr != ctx.head_dim:
        bad(f"an mla block's head_dim is qk_nope_head_dim + qk_rope_head_dim = "
            f"{max(dn, 0) + dr}, got {ctx.head_dim}", ctx.span("qk_nope_head_dim"),
            f"set head_dim: {max(dn, 1) + dr}")
    dv = values["v_head_dim"] if values["v_head_dim"] is not None else ctx.v_head_dim
    if dv != ctx.v_head_dim:
        bad(f"mla v_head_dim {dv} differs from the block's v_head_dim {ctx.v_head_dim}",
            ctx.span("v_head_dim"), f"set the block's v_head_dim: {dv}")
    if not ok:
        return None
    return MLA(r, values["q_lora_rank"], dn, dr, dv, values["rope_interleave"],
               values["absorb"], values["factor"], values["mscale_all_dim"],
               span=ctx.span(None))


def _summary(n: MLA, block) -> str:
    h = block.heads
    q = f"q_lora_rank {n.q_lora_rank}" if n.q_lora_rank else "q_proj"
    form = "absorbed" if absorbed(n, block) else "plain"
    per_head = h * (n.qk_nope_head_dim + n.qk_rope_head_dim + n.v_head_dim)
    return (f"kv_lora_rank {n.kv_lora_rank}, {q}, qk {n.qk_nope_head_dim}+"
            f"{n.qk_rope_head_dim}, v {n.v_head_dim}, {form}; cache/token "
            f"{n.kv_lora_rank + n.qk_rope_head_dim} values (per-head K/V: {per_head})")


def _flops(n: MLA, block, batch: int, q_len: int, k_len: int) -> int:
    """The projections (q, kv_a, and kv_b over the new keys when plain; the query and output
    absorption when absorbed). The attention line counts the plain per-cell work."""
    h, dn, dr, dv, r = (block.heads, n.qk_nope_head_dim, n.qk_rope_head_dim, n.v_head_dim,
                        n.kv_lora_rank)
    if not n.q_lora_rank:
        q = q_len * block.width_q * h * (dn + dr)
    else:
        q = q_len * n.q_lora_rank * (block.width_q + h * (dn + dr))
    kv = k_len * block.width_kv * (r + dr)
    if absorbed(n, block):
        kv += q_len * h * r * (dn + dv)
    else:
        kv += k_len * r * h * (dn + dv)
    return 2 * batch * (q + kv)


FEATURE = BlockFeature(
    key="mla", node=MLA,
    options=(Option("kv_lora_rank", "int", None, minimum=1, doc="width of the cached latent"),
             Option("q_lora_rank", "int", 0, minimum=0,
                    doc="low-rank query (q_a_proj, q_b_proj); 0: one q_proj"),
             Option("qk_nope_head_dim", "int", None, minimum=1,
                    doc="query/key features per head without RoPE (default head_dim - rope dim)"),
             Option("qk_rope_head_dim", "int", None, minimum=2,
                    doc="query/key features per head with RoPE (the block's rope dim)"),
             Option("v_head_dim", "int", None, minimum=1,
                    doc="value features per head (the block's v_head_dim)"),
             Option("rope_interleave", "bool", True,
                    doc="DeepSeek's interleaved rope pairs, written de-interleaved"),
             Option("absorb", "choice", "cache", choices=ABSORB,
                    doc="absorb kv_b_proj: with a cache (cache), always or never"),
             Option("factor", "float", 1.0, doc="YaRN factor of the softmax mscale"),
             Option("mscale_all_dim", "number", 0.0,
                    doc="YaRN mscale_all_dim: scale *= (0.1 * it * ln(factor) + 1) ** 2")),
    doc="multi-head latent attention (DeepSeek V2/V3): latent KV cache, absorbed decode",
    example="{kv_lora_rank: 512, q_lora_rank: 1536}",
    make=_make,
    format=lambda n: (("kv_lora_rank", n.kv_lora_rank),
                      ("q_lora_rank", n.q_lora_rank),
                      ("qk_nope_head_dim", n.qk_nope_head_dim),
                      ("qk_rope_head_dim", n.qk_rope_head_dim), ("v_head_dim", n.v_head_dim),
                      ("rope_interleave", n.rope_interleave), ("absorb", n.absorb),
                      ("factor", n.factor), ("mscale_all_dim", n.mscale_all_dim)),
    shorthand=lambda v: None,
    weights=_weights,
    init=_init,
    summary=_summary,
    flops=_flops,
    reference={"project": _ref_project, "cache": _ref_cache, "attended": _ref_attended},
    portable={"project": _port_project, "cache": _port_cache, "attended": _port_attended},
    ort=lambda n, block: "no fused attention kernel computes multi-head latent attention (mla)",
    cache=_cache,
)
