"""``diff``: differential attention (DIFF Transformer, Ye et al. 2024) as transformers'
``DiffLlamaAttention`` computes it (``features/kernels.py``, ``diff_attention``).

``diff: {layer: 0, lambda_init: <from layer>, eps: 1e-5}`` (``diff: true`` takes the
defaults). The heads pair up by halves of the head axis: pair ``j < H/2`` subtracts the map of
query head ``j + H/2`` from that of query head ``j`` (each reading its own kv head
``g(h) = h // (H/G)``, plain GQA) and multiplies the difference with a value of width 2·Dv,
the kv heads of the two halves side by side::

    V_j = [v_{g(j)} | v_{g(j) + G/2}]
    o_j = (1 - lambda_init) * RMSNorm_2Dv((P_j - lam * P_{j + H/2}) V_j)
    lam = exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + lambda_init
    lambda_init = 0.8 - 0.6 * exp(-0.3 * layer)       (layer 0-based, DiffLlama's layer_idx)

RMSNorm without weight (``x / sqrt(mean(x^2) + eps)`` over the 2·Dv features, DiffLlama's
``groupnorm``, ``eps`` its ``rms_norm_eps``); the H/2 pairs of width 2·Dv are concatenated in
order, H·Dv features as without ``diff``, into the output projection. The four ``[head_dim]``
vectors are weights ``<block>.lambda_q1``, ``.lambda_k1``, ``.lambda_q2``, ``.lambda_k2``
(DiffLlama's names), shared by all heads; ``lambda_init`` given explicitly replaces the
layer formula. Needs an even number of heads and of kv heads, and projections (the weights).

Hook points: ``values`` builds the paired values after the cache join (the cache holds the
plain per-head values), giving kv head ``g`` the value ``[v_{g mod G/2} | v_{g mod G/2 +
G/2}]``, so that one attention gives every query head ``h`` the product ``P_h V_{pair(h)}`` of
width 2·Dv; ``attended`` takes the difference of the two halves of the heads (the products are
linear in P), the RMSNorm and the factor. The attention probabilities (``attn.weights``) are
the per-head maps P_h, as DiffLlama returns them. The softmax is the block's own, so every
block-sparse strategy applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option

LAMBDAS = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")


@dataclass(frozen=True, slots=True)
class Diff(BlockNode):
    layer: int = 0
    lambda_init: float = 0.2  # 0.8 - 0.6 * exp(-0.3 * layer)
    eps: float = 1e-5
    span: Span | None = span_field()


def lambda_init_of(layer: int) -> float:
    """DiffLlama's ``lambda_init_fn``: ``0.8 - 0.6 * exp(-0.3 * layer_idx)``."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


def _names(block_name: str) -> tuple[str, ...]:
    return tuple(f"{block_name}.{n}" for n in LAMBDAS)


# ------------------------------------------------------------------ reference


def _reference_values(n: Diff, st) -> None:
    g = st.v.shape[1] // 2
    v1, v2 = st.v[:, :g], st.v[:, g:]  # the kv heads of the two halves
    st.v = np.concatenate([np.concatenate([v1, v1], axis=1),
                           np.concatenate([v2, v2], axis=1)], axis=-1)  # [B, G, Sk, 2Dv]


def _reference_attended(n: Diff, st) -> None:
    q1, k1, q2, k2 = (st.weight(name) for name in _names(st.block.name))
    lam = math.exp(float(np.sum(q1 * k1))) - math.exp(float(np.sum(q2 * k2))) + n.lambda_init
    h = st.o.shape[1] // 2
    x = st.o[:, :h] - lam * st.o[:, h:]  # [B, H/2, Sq, 2Dv]
    x = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + n.eps)
    st.o = (1.0 - n.lambda_init) * x


# ------------------------------------------------------------------ portable lowering


def _portable_values(n: Diff, st) -> None:
    g, b = st.g, st.block
    half = b.kv_heads // 2
    with g.scope("diff"):
        v1 = g.slice(st.v, [0], [half], [1])
        v2 = g.slice(st.v, [half], [b.kv_heads], [1])
        st.v = g.concat([g.concat([v1, v1], axis=1), g.concat([v2, v2], axis=1)], axis=-1)
    st.v_width = 2 * b.v_head_dim


def _portable_attended(n: Diff, st) -> None:
    g, b = st.g, st.block
    half = b.heads // 2
    with g.scope("diff"):
        q1, k1, q2, k2 = (st.float32(name) for name in _names(b.name))

        def term(a: str, c: str) -> str:  # exp(sum(a * c)), shape [1]
            return g.op("Exp", g.reduce("ReduceSum", g.mul(a, c), [0]))

        lam = g.add(g.sub(term(q1, k1), term(q2, k2)), g.scalar(n.lambda_init, np.float32))
        x = g.sub(g.slice(st.o, [0], [half], [1]),
                  g.mul(lam, g.slice(st.o, [half], [b.heads], [1])))
        ms = g.reduce("ReduceMean", g.mul(x, x), [-1])
        x = g.div(x, g.op("Sqrt", g.add(ms, g.scalar(n.eps, np.float32))))
        st.o = g.mul(x, g.scalar(1.0 - n.lambda_init, np.float32))


# ------------------------------------------------------------------ build


def _make(values: dict[str, object], ctx) -> Diff | None:
    ok = True

    def bad(msg: str, hint: str) -> None:
        nonlocal ok
        ok = False
        ctx.err(msg, ctx.span(None), hint)

    for what, n in (("heads", ctx.heads), ("kv_heads", ctx.kv_heads)):
        if n % 2:
            bad(f"diff pairs the {what} by halves, so {what} must be even, got {n}",
                f"use an even {what} (DiffLlama: kv_heads even and at least 2)")
    if not ctx.project:
        bad("diff's lambda vectors (<block>.lambda_q1 ...) are weights, and a core-mode "
            "block (project: false) has no weights", "use project: true")
    if not ok:
        return None
    layer = values["layer"]
    li = values["lambda_init"]
    return Diff(layer, lambda_init_of(layer) if li is None else li, values["eps"],
                span=ctx.span(None))


def _summary(n: Diff, block) -> str:
    return (f"{block.heads // 2} head pairs, lambda_init {n.lambda_init:.6g} (layer "
            f"{n.layer}), lambda vectors 4 x [{block.head_dim}], values [v_g | v_g'] of "
            f"width {2 * block.v_head_dim}, RMSNorm eps {n.eps:g}")


FEATURE = BlockFeature(
    key="diff", node=Diff,
    options=(Option("layer", "int", 0, minimum=0,
                    doc="0-based layer index: lambda_init = 0.8 - 0.6 exp(-0.3 layer)"),
             Option("lambda_init", "number", None, doc="lambda_init itself (else from layer)"),
             Option("eps", "float", 1e-5, doc="the RMSNorm's eps over 2 v_head_dim")),
    doc="differential attention (DIFF Transformer, DiffLlama): paired maps P1 - lambda P2",
    example="{layer: 3}",
    make=_make,
    format=lambda n: (("layer", n.layer), ("lambda_init", n.lambda_init), ("eps", n.eps)),
    weights=lambda n, block: {name: (block.head_dim,) for name in _names(block.name)},
    init=lambda name, shape, rng: 0.1 * rng.standard_normal(shape),  # lambda_std_dev 0.1
    summary=_summary,
    # the two dot products of the lambda vectors; the P @ V products of width 2 Dv are not
    # added (the attention FLOPs count 2 (D + Dv) per attended cell, from the mask's density)
    flops=lambda n, block, batch, q_len, k_len: 2 * 2 * block.head_dim,
    reference={"values": _reference_values, "attended": _reference_attended},
    portable={"values": _portable_values, "attended": _portable_attended},
    ort=lambda n, block: ("no fused attention kernel computes differential attention "
                          "(diff: paired values and maps)"),
    passes=frozenset({"fold-scale", "fuse-qkv"}),
)
