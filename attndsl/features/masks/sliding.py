"""``sliding(w)``: ``k <= q and q - k < w``."""

from __future__ import annotations

from dataclasses import dataclass

from ...source import Span
from ..base import (
    Algebra,
    Feature,
    Mask,
    Param,
    Tiles,
    bounds_from,
    constant,
    span_field,
    witness_diag,
)


@dataclass(frozen=True, slots=True)
class Sliding(Mask):
    """``k <= q and q - k < size``."""

    size: int
    span: Span | None = span_field()


def _offsets(m: Sliding):
    return (1 - m.size, 0, 1)


def _lower(m: Sliding, ctx) -> str:
    g, d = ctx.g, ctx.pos.q_minus_k
    return g.and_(g.greater_equal(d, g.scalar(0, "int64")), g.less(d, g.scalar(m.size, "int64")))


FEATURE = Feature(
    name="sliding", kind="mask", node=Sliding,
    params=(Param("w", "int", minimum=1),), doc="k <= q and q - k < w",
    format=lambda m: f"sliding({m.size})",
    eval=lambda m, ev: (ev.k <= ev.q) & (ev.q - ev.k < m.size),
    witnesses=witness_diag,
    algebra=Algebra(rank=30, offsets=_offsets),
    tiles=Tiles(support=constant("d")),
    bounds=bounds_from(_offsets),
    lower=_lower,
    ort=lambda m: (0, m.size - 1),
    viz=lambda m: m.size,
    inputs=constant(()),
)
