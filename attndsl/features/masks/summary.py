"""``summary(c, n)``: the last ``n`` key positions of every ``c``-block."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import (
    NO_FUSED,
    NO_WITNESS,
    UNBOUNDED,
    Algebra,
    Feature,
    Mask,
    Param,
    Tiles,
    constant,
    span_field,
)
from .all import All


@dataclass(frozen=True, slots=True)
class Summary(Mask):
    """The last ``n`` key positions of every ``c``-block."""

    c: int
    n: int
    span: Span | None = span_field()


def _lower(m: Summary, ctx) -> str:
    g = ctx.g
    return g.greater_equal(g.op("Mod", ctx.pos.k, g.scalar(m.c, "int64")),
                           g.scalar(m.c - m.n, "int64"))


FEATURE = Feature(
    name="summary", kind="mask", node=Summary,
    params=(Param("c", "int", minimum=1), Param("n", "int", minimum=1)), doc="k % c >= c - n",
    format=lambda m: f"summary({m.c}, {m.n})",
    eval=lambda m, ev: np.broadcast_to(ev.k % m.c >= m.c - m.n, ev.k.shape),
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=80, implies=lambda a, b: a.c == b.c and a.n <= b.n,
                    constant=lambda m: All() if m.n >= m.c else None),
    tiles=Tiles(support=constant("k")),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=NO_FUSED,
    viz=lambda m: m.c,
    inputs=constant(()),
)
