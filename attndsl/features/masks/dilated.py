"""``dilated(l, r, d)``: ``window(l, r) and (q - k) % d == 0``."""

from __future__ import annotations

from dataclasses import dataclass

from ...source import Span
from ..base import (
    NO_FUSED,
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
from .strided import divides
from .window import Window, check_not_empty


@dataclass(frozen=True, slots=True)
class Dilated(Mask):
    left: int
    right: int
    dilation: int
    span: Span | None = span_field()


def _offsets(m: Dilated):
    return (-m.left, m.right, m.dilation)


def _eval(m: Dilated, ev):
    q, k = ev.q, ev.k
    return (k >= q - m.left) & (k <= q + m.right) & ((q - k) % m.dilation == 0)


def _lower(m: Dilated, ctx) -> str:
    window = ctx.lower(Window(m.left, m.right))  # shared with a window(l, r) of the mask
    return ctx.g.and_(window, divides(ctx, m.dilation))


FEATURE = Feature(
    name="dilated", kind="mask", node=Dilated,
    params=(Param("l", "int"), Param("r", "int"), Param("d", "int", minimum=1)),
    doc="window(l, r) and (q - k) % d == 0",
    check_args=check_not_empty,
    format=lambda m: f"dilated({m.left}, {m.right}, {m.dilation})",
    eval=_eval,
    witnesses=witness_diag,
    algebra=Algebra(rank=50, offsets=_offsets),
    tiles=Tiles(support=constant("d")),
    bounds=bounds_from(_offsets),
    lower=_lower,
    ort=NO_FUSED,
    viz=lambda m: m.left + m.right + 1,
    inputs=constant(()),
)
