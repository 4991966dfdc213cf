"""``global(i, j, ...)``: the query or the key is one of the listed positions."""

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
from .none import Never


@dataclass(frozen=True, slots=True)
class Global(Mask):
    """``q`` or ``k`` is one of ``positions``."""

    positions: tuple[int, ...]
    span: Span | None = span_field()


def _eval(m: Global, ev):
    pos = np.asarray(m.positions)
    return np.isin(ev.q, pos) | np.isin(ev.k, pos)


def _normalize(m: Global) -> Mask | None:
    """Rule leaf-sort: positions sorted and unique; none if empty."""
    vals = m.positions
    if vals and all(a < b for a, b in zip(vals, vals[1:], strict=False)):
        return None
    vals = tuple(sorted(set(vals)))
    return Global(vals) if vals else Never()


def _merge(a: Global, b: Global, is_and: bool) -> Mask | None:
    if is_and:
        return None
    return Global(tuple(sorted(set(a.positions) | set(b.positions))))


def _classify(m: Global, grid):
    pos = np.asarray(m.positions)

    def inside(a, b):
        return np.searchsorted(pos, b, "right") - np.searchsorted(pos, a, "left")

    in_q, in_k = inside(grid.qa, grid.qb), inside(grid.ka, grid.kb)
    full = (in_q == grid.qb - grid.qa + 1) | (in_k == grid.kb - grid.ka + 1)
    return grid.pick(full, (in_q == 0) & (in_k == 0))


def member(ctx, x: str, positions: tuple[int, ...]) -> str:
    """``x`` is one of ``positions`` (a bool lookup table; x >= 0, or masked elsewhere)."""
    g = ctx.g
    top = max(positions)
    table = np.zeros(top + 1, dtype=bool)
    table[list(positions)] = True
    idx = g.op("Clip", x, g.scalar(0, "int64"), g.scalar(top, "int64"))
    return g.and_(g.less_equal(x, g.scalar(top, "int64")), g.gather(g.const(table, bool), idx))


def _lower(m: Global, ctx) -> str:
    p = ctx.pos
    return ctx.g.or_(member(ctx, p.q_col, m.positions), member(ctx, p.k, m.positions))


FEATURE = Feature(
    name="global", kind="mask", node=Global,
    params=(Param("i", "int"),), doc="q or k is a listed position", variadic=True,
    make=lambda values, span: Global(tuple(values), span=span),
    format=lambda m: f"global({', '.join(map(str, m.positions))})",
    eval=_eval,
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=100, implies=lambda a, b: set(a.positions) <= set(b.positions),
                    normalize=_normalize, merge=_merge),
    tiles=Tiles(support=constant("p"), classify=_classify),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=NO_FUSED,
    viz=lambda m: max(m.positions) + 1,
    inputs=constant(()),
)
