"""``strided(s)``: ``(q - k) % s == 0``."""

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


@dataclass(frozen=True, slots=True)
class Strided(Mask):
    stride: int
    span: Span | None = span_field()


def divides(ctx, n: int) -> str:
    """``(q - k) % n == 0`` at the context's positions."""
    g = ctx.g
    return g.equal(g.op("Mod", ctx.pos.q_minus_k, g.scalar(n, "int64")), g.scalar(0, "int64"))


def _offsets(m: Strided):
    return (None, None, m.stride)


FEATURE = Feature(
    name="strided", kind="mask", node=Strided,
    params=(Param("s", "int", minimum=1),), doc="(q - k) % s == 0",
    format=lambda m: f"strided({m.stride})",
    eval=lambda m, ev: (ev.q - ev.k) % m.stride == 0,
    witnesses=witness_diag,
    algebra=Algebra(rank=60, offsets=_offsets),
    tiles=Tiles(support=constant("d")),
    bounds=bounds_from(_offsets),
    lower=lambda m, ctx: divides(ctx, m.stride),
    ort=NO_FUSED,
    viz=lambda m: m.stride,
    inputs=constant(()),
)
