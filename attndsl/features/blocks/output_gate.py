"""``output_gate``: the attention output gated before the output projection, ``out =
o_proj(attn * sigmoid(g))`` (Qwen3-Next ``Qwen3NextAttention`` with ``attn_output_gate``).

``output_gate: true`` (``source: query``) takes ``g`` from extra rows of the query projection,
as Qwen3-Next does: ``<block>.q_proj.weight`` is ``[heads * 2 * head_dim, width]`` and, per
head, the head's ``head_dim`` query rows are followed by its ``head_dim`` gate rows (``[q_0;
g_0; q_1; g_1; ...]``, ``features/kernels.py`` ``split_gated_query``); a q bias, if any, is
``[heads * 2 * head_dim]`` in the same order. ``output_gate: {source: own}`` gives the gate
its own projection of the query stream, ``<block>.g_proj.weight`` ``[heads * v_head_dim,
width]`` (no bias). ``g`` is per query token and per output feature ``[B, Sq, H*Dv]``, so the
gate is the same with or without a cache and for every attention strategy.

Hook points: ``project`` (``source: query``: the projections, the gate rows split off and
kept in the block state's ``extra``) and ``merged`` (the merged heads times ``sigmoid(g)``,
computed in float32 and cast back to the model dtype). The gated q projection is not the plain
layout, so ``fuse-qkv`` and ``fold-scale`` (which would scale the gate rows too) skip a gated
block; with ``source: own`` they skip it as well (one ``passes`` set per feature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from .. import kernels
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option


@dataclass(frozen=True, slots=True)
class OutputGate(BlockNode):
    source: str = "query"  # "query" (rows of q_proj, per head) | "own" (g_proj)
    span: Span | None = span_field()


def _gate_name(block) -> str:
    return f"{block.name}.g_proj"


def _weights(n: OutputGate, block) -> dict[str, tuple[int, ...]]:
    """The q, k, v projections (its ``project`` rule replaces the engine's, so it lists
    them; with ``source: query`` q has the gate rows too) and the own gate projection."""
    h, g, d, dv = block.heads, block.kv_heads, block.head_dim, block.v_head_dim
    q_rows = h * 2 * d if n.source == "query" else h * d
    shapes = {"q": (q_rows, block.width_q), "k": (g * d, block.width_kv),
              "v": (g * dv, block.width_kv)}
    out: dict[str, tuple[int, ...]] = {}
    for proj, shape in shapes.items():
        out[f"{block.name}.{proj}_proj.weight"] = shape
        if block.has_bias(proj):
            out[f"{block.name}.{proj}_proj.bias"] = shape[:1]
    if n.source == "own":
        out[f"{_gate_name(block)}.weight"] = (h * dv, block.width_q)
    return out


# ------------------------------------------------------------------ reference


def _linear(st, x: np.ndarray, name: str, bias: bool) -> np.ndarray:
    y = x @ st.weight(f"{name}.weight").T
    return y + st.weight(f"{name}.bias") if bias else y


def _reference_project(n: OutputGate, st):
    """The three projections; ``source: query`` splits the gate rows off q (``source: own``
    projects as the engine does: the rule replaces the step for both sources)."""
    b = st.block
    q = _linear(st, st.xq, f"{b.name}.q_proj", b.has_bias("q"))
    if n.source == "query":
        q, st.extra["gate"] = kernels.split_gated_query(q, b.heads, b.head_dim)
    return (q, _linear(st, st.xk, f"{b.name}.k_proj", b.has_bias("k")),
            _linear(st, st.xv, f"{b.name}.v_proj", b.has_bias("v")))


def _reference_merged(n: OutputGate, st) -> None:
    if n.source == "own":
        gate = st.xq @ st.weight(f"{_gate_name(st.block)}.weight").T
    else:
        gate = st.extra["gate"]
    st.o = kernels.output_gate(st.o, gate)


# ------------------------------------------------------------------ portable lowering


def _portable_project(n: OutputGate, st) -> tuple[str, str, str]:
    b, g, low = st.block, st.g, st.low
    if n.source == "own":
        return low.project(b)
    xq, xk, xv = low.streams[b.query], low.streams[b.key], low.streams[b.value]
    with g.scope("output_gate"):
        qg = g.reshape(st.linear(xq, f"{b.name}.q_proj", b.has_bias("q")),
                       [0, 0, b.heads, 2 * b.head_dim])  # per head: [q_h; g_h]
        q, gate = g.op_multi("Split", qg, g.i64(b.head_dim, b.head_dim), axis=-1, n_out=2)
        width = b.heads * b.head_dim
        st.extra["gate"] = g.reshape(gate, [0, 0, width])
        q = g.reshape(q, [0, 0, width])
    return (q, st.linear(xk, f"{b.name}.k_proj", b.has_bias("k")),
            st.linear(xv, f"{b.name}.v_proj", b.has_bias("v")))


def _portable_merged(n: OutputGate, st) -> None:
    b, g = st.block, st.g
    with g.scope("output_gate"):
        if n.source == "own":
            gate = st.linear(st.low.streams[b.query], _gate_name(b), False)
        else:
            gate = st.extra["gate"]
        o = g.mul(st.to_float32(st.o), g.op("Sigmoid", st.to_float32(gate)))
        st.o = st.to_model_dtype(o)


# ------------------------------------------------------------------ build


def _make(values: dict[str, object], ctx) -> OutputGate | None:
    source = values["source"]
    if not ctx.project:
        ctx.err("output_gate needs projections (project: true): its gate is a projection of "
                "the query stream", ctx.span(None), "drop output_gate or set project: true")
        return None
    if source == "query" and ctx.v_head_dim != ctx.head_dim:
        ctx.err(f"output_gate source query gives head_dim ({ctx.head_dim}) gate values per "
                f"head, the attention output has v_head_dim ({ctx.v_head_dim})",
                ctx.span("source"), "use source: own (its own [heads*v_head_dim] projection)")
        return None
    return OutputGate(source, span=ctx.span(None))


def _shorthand(value: object) -> dict[str, object] | None:
    if value is True or value is None:
        return {}
    if value in ("query", "own"):
        return {"source": value}
    return None


def _summary(n: OutputGate, block) -> str:
    if n.source == "own":
        return f"o * sigmoid(g_proj(x)), g_proj [{block.heads * block.v_head_dim}]"
    return f"o * sigmoid(g), g from q_proj rows (per head [q; g], q_proj " \
           f"[{2 * block.heads * block.head_dim}])"


def _flops(n: OutputGate, block, batch: int, q_len: int, k_len: int) -> int:
    """The q, k, v projections it computes in place of the engine's, plus the gate rows (or
    g_proj): one more [heads*Dv, width] matrix product per query."""
    h, g, d, dv = block.heads, block.kv_heads, block.head_dim, block.v_head_dim
    gate = h * (d if n.source == "query" else dv)
    return 2 * batch * (q_len * (h * d + gate) * block.width_q
                        + k_len * g * (d + dv) * block.width_kv)


FEATURE = BlockFeature(
    key="output_gate", node=OutputGate,
    options=(Option("source", "choice", "query", choices=("query", "own"),
                    doc="gate rows of q_proj (per head, after the query rows) or g_proj"),),
    doc="the attention output times sigmoid(g) before o_proj (Qwen3-Next)",
    example="{source: query}",
    make=_make,
    format=lambda n: (("source", n.source),),
    shorthand=_shorthand,
    weights=_weights,
    summary=_summary,
    flops=_flops,
    reference={"project": _reference_project, "merged": _reference_merged},
    portable={"project": _portable_project, "merged": _portable_merged},
    ort=lambda n, block: "no fused attention kernel gates its output (output_gate)",
)
