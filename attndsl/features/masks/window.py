"""``window(l, r)``: ``q - l <= k <= q + r``."""

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
class Window(Mask):
    """``q - left <= k <= q + right``."""

    left: int
    right: int
    span: Span | None = span_field()


def check_not_empty(name: str, values: list, span, errors) -> None:
    """``window`` / ``dilated``: l + r < 0 allows no offset at all."""
    if values[0] + values[1] < 0:
        errors.error(f"{name}: the window is empty (l + r < 0)", span)


def _offsets(m: Window):
    return (-m.left, m.right, 1)


def _lower(m: Window, ctx) -> str:
    g, d = ctx.g, ctx.pos.q_minus_k
    return g.and_(g.less_equal(d, g.scalar(m.left, "int64")),
                  g.greater_equal(d, g.scalar(-m.right, "int64")))


FEATURE = Feature(
    name="window", kind="mask", node=Window,
    params=(Param("l", "int"), Param("r", "int")), doc="q - l <= k <= q + r",
    check_args=check_not_empty,
    format=lambda m: f"window({m.left}, {m.right})",
    eval=lambda m, ev: (ev.k >= ev.q - m.left) & (ev.k <= ev.q + m.right),
    witnesses=witness_diag,
    algebra=Algebra(rank=40, offsets=_offsets),
    tiles=Tiles(support=constant("d")),
    bounds=bounds_from(_offsets),
    lower=_lower,
    ort=lambda m: (-m.right, m.left),
    viz=lambda m: m.left + m.right + 1,
    inputs=constant(()),
)
