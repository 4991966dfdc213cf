"""``prefix(n)``: ``k < n`` for a literal n; ``prefix(len)`` with an input is ``padding(len)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import NO_FUSED, UNBOUNDED, Algebra, Feature, Mask, Param, Tiles, constant, span_field
from .none import Never
from .padding import Padding


@dataclass(frozen=True, slots=True)
class Prefix(Mask):
    """``k < n`` for a literal n."""

    n: int
    span: Span | None = span_field()


def _make(values: list, span) -> Mask:
    v = values[0]
    if isinstance(v, tuple):  # ("input", name)
        return Padding(v[1], span=span)
    return Prefix(v, span=span)


FEATURE = Feature(
    name="prefix", kind="mask", node=Prefix,
    params=(Param("n", "int_or_input"),), doc="k < n (or k < len[b])",
    make=_make,
    format=lambda m: f"prefix({m.n})",
    eval=lambda m, ev: np.broadcast_to(ev.k < m.n, ev.k.shape),
    witnesses=lambda m, diagonal, sub: frozenset({"zero"}) if m.n >= 1 else frozenset(),
    algebra=Algebra(rank=90, implies=lambda a, b: a.n <= b.n,
                    constant=lambda m: Never() if m.n <= 0 else None),
    tiles=Tiles(support=constant("k")),
    bounds=UNBOUNDED,
    lower=lambda m, ctx: ctx.g.less(ctx.pos.k, ctx.g.scalar(m.n, "int64")),
    ort=NO_FUSED,
    viz=lambda m: m.n,
    inputs=constant(()),
)
