"""``causal``: ``k <= q``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import Algebra, Feature, Mask, Tiles, bounds_from, constant, span_field, witness_all


@dataclass(frozen=True, slots=True)
class Causal(Mask):
    span: Span | None = span_field()


def _offsets(m: Causal):
    return (None, 0, 1)


def _lower(m: Causal, ctx) -> str:
    g, p = ctx.g, ctx.pos
    if p.cheap_offsets:
        return g.greater_equal(p.q_minus_k, g.scalar(0, "int64"))
    return g.less_equal(p.k, p.q_col)


FEATURE = Feature(
    name="causal", kind="mask", node=Causal, doc="k <= q",
    format=constant("causal"),
    eval=lambda m, ev: ev.k <= ev.q,
    witnesses=witness_all,
    algebra=Algebra(rank=20, offsets=_offsets),
    tiles=Tiles(support=constant("d")),
    bounds=bounds_from(_offsets),
    lower=_lower,
    ort=constant((0, np.inf)),
    viz=constant(0),
    inputs=constant(()),
)
