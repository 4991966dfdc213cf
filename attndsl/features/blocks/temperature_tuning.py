"""``temperature_tuning``: the query temperature by position of Llama 4's NoPE layers
(``Llama4TextAttention`` with ``attn_temperature_tuning``).

``temperature_tuning: {attn_scale: 0.1, floor_scale: 8192}`` (``true``: these defaults)
multiplies the query at position ``pos`` by

    1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)

where ``pos`` is the query's absolute position in the block (``past_len + i`` with a cache,
as transformers' ``cache_position``; never position ids), so the factor is 1 for the first
``floor_scale - 1`` positions and grows with the log of the position after that. In
cross-attention the queries are at ``i``. Hook point ``post_rope``: after RoPE and QK-norm,
before the logit scale. Llama 4 applies it only on its NoPE layers (no RoPE, no QK-norm); a
block with ``rope`` may have it too, and then it scales the rotated queries. The portable
lowering computes ``floor((pos + 1) / floor_scale)`` in int64 (exact) and the factor in
float32.

Keys and values are untouched, so the cache holds what it would without it. ``fold-scale``
stays exact (a per-row factor commutes with the constant scale folded into q_proj);
``fuse-qkv`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from .. import kernels
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option


@dataclass(frozen=True, slots=True)
class TemperatureTuning(BlockNode):
    attn_scale: float = 0.1
    floor_scale: int = 8192
    span: Span | None = span_field()


def _reference(n: TemperatureTuning, st) -> None:
    factor = kernels.llama4_attn_scales(st.q_pos, n.attn_scale, n.floor_scale)
    st.q = st.q * factor[None, None, :, None]


def _portable(n: TemperatureTuning, st) -> None:
    g = st.g
    with g.scope("temperature"):
        steps = g.div(g.add(st.pos.q, g.scalar(1, "int64")),
                      g.scalar(n.floor_scale, "int64"))  # floor: positions are >= 0
        log = g.op("Log", g.add(g.cast(steps, st.FLOAT), g.scalar(1.0, np.float32)))
        factor = g.add(g.mul(log, g.scalar(n.attn_scale, np.float32)),
                       g.scalar(1.0, np.float32))  # [Sq]
        st.q = g.mul(st.q, g.unsqueeze(factor, [1]))


FEATURE = BlockFeature(
    key="temperature_tuning", node=TemperatureTuning,
    options=(Option("attn_scale", "float", 0.1, doc="the factor's slope"),
             Option("floor_scale", "int", 8192, minimum=1,
                    doc="positions per step of floor((pos + 1) / floor_scale)")),
    doc="query temperature by position (Llama 4 NoPE layers)",
    example="{attn_scale: 0.1, floor_scale: 8192}",
    make=lambda values, ctx: TemperatureTuning(values["attn_scale"], values["floor_scale"],
                                               span=ctx.span(None)),
    format=lambda n: (("attn_scale", n.attn_scale), ("floor_scale", n.floor_scale)),
    summary=lambda n, block: (f"q * (1 + {n.attn_scale:g} * log(floor((pos + 1) / "
                              f"{n.floor_scale}) + 1))"),
    reference={"post_rope": _reference},
    portable={"post_rope": _portable},
    ort=lambda n, block: "no fused attention kernel scales queries by position "
                         "(temperature_tuning)",
    passes=frozenset({"fold-scale", "fuse-qkv"}),
)
