"""``clip_qkv``: the projected queries, keys and values clamped to ``[-c, c]`` (OLMo
``OlmoAttention`` with ``config.clip_qkv``, MPT's ``clip_qkv``).

``clip_qkv: 8.0`` (``.attn``: ``clip_qkv 8.0``), or the mapping ``clip_qkv: {limit: 8.0}``:
``q = clamp(q_proj(x), -c, c)``, likewise ``k`` and ``v``, after the projections' biases and
before anything else (QK-norm over the width, the head split, RoPE). Hook point
``projected``; the portable lowering clamps with ONNX ``Clip`` in the model dtype, as the
modules clamp their projections in place. In core mode (``project: false``) the streams
themselves are clamped. The keys and values are cached clamped.

``fuse-qkv`` stays exact (the clamp follows the split); ``fold-scale`` does not (a clamp of the
scaled q is not the scaled clamp), so it skips the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option


@dataclass(frozen=True, slots=True)
class ClipQKV(BlockNode):
    limit: float = 0.0  # c > 0: q, k, v are clamped to [-c, c]
    span: Span | None = span_field()


def _reference(n: ClipQKV, st) -> None:
    st.q, st.k, st.v = (np.clip(x, -n.limit, n.limit) for x in (st.q, st.k, st.v))


def _portable(n: ClipQKV, st) -> None:
    g = st.g
    dtype = np.float16 if st.float16 else np.float32
    lo, hi = g.scalar(-n.limit, dtype), g.scalar(n.limit, dtype)
    with g.scope("clip_qkv"):
        st.q, st.k, st.v = (g.op("Clip", x, lo, hi) for x in (st.q, st.k, st.v))


def _make(values: dict[str, object], ctx) -> ClipQKV | None:
    if values["limit"] is None:
        ctx.err("clip_qkv needs a limit", ctx.span(None), "write clip_qkv: 8.0 (a positive "
                "number c: q, k, v are clamped to [-c, c])")
        return None
    return ClipQKV(values["limit"], span=ctx.span(None))


def _shorthand(value: object) -> dict[str, object] | None:
    if value is None or value is True:
        return {}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"limit": value}
    return None


FEATURE = BlockFeature(
    key="clip_qkv", node=ClipQKV,
    options=(Option("limit", "float", None, doc="c: q, k, v are clamped to [-c, c]"),),
    doc="the projected q, k, v clamped to [-c, c] (OLMo, MPT)",
    example="{limit: 8.0}",
    make=_make,
    format=lambda n: (("limit", n.limit),),
    shorthand=_shorthand,
    summary=lambda n, block: f"q, k, v clamped to [-{n.limit:g}, {n.limit:g}]",
    reference={"projected": _reference},
    portable={"projected": _portable},
    ort=lambda n, block: "no fused attention kernel clamps q, k and v (clip_qkv)",
    passes=frozenset({"fuse-qkv"}),
)
