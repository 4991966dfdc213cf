"""``chunk(c)``: ``q // c == k // c``."""

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
    constant,
    span_field,
    witness_diag,
)


@dataclass(frozen=True, slots=True)
class Chunk(Mask):
    size: int
    span: Span | None = span_field()


def _offsets(m: Chunk):
    return (0, 0, 1) if m.size == 1 else None  # chunk(1) is the diagonal


def _hull(m: Chunk):
    return (1 - m.size, m.size - 1, 1)  # |k - q| < c inside a chunk


def _bounds(m: Chunk, ctx):
    lo, hi, _ = _offsets(m) or _hull(m)
    return lo, hi


def _classify(m: Chunk, grid):
    c = m.size
    qa, qb, ka, kb = grid.qa // c, grid.qb // c, grid.ka // c, grid.kb // c
    full = (qa == qb) & (ka == kb) & (qa == ka)
    empty = (qb < ka) | (kb < qa)
    return grid.pick(full, empty)


def _lower(m: Chunk, ctx) -> str:
    g, p = ctx.g, ctx.pos
    c = g.scalar(m.size, "int64")
    return g.equal(g.div(p.q_col, c), g.div(p.k, c))


FEATURE = Feature(
    name="chunk", kind="mask", node=Chunk,
    params=(Param("c", "int", minimum=1),), doc="q // c == k // c",
    format=lambda m: f"chunk({m.size})",
    eval=lambda m, ev: ev.q // m.size == ev.k // m.size,
    witnesses=witness_diag,
    algebra=Algebra(rank=70, offsets=_offsets, hull=_hull,
                    core=constant((0, 0, 1)),  # the diagonal is in every chunk
                    implies=lambda a, b: b.size % a.size == 0),
    tiles=Tiles(support=lambda m, sub: "d" if m.size == 1 else "p", classify=_classify),
    bounds=_bounds,
    lower=_lower,
    ort=NO_FUSED,
    viz=lambda m: m.size,
    inputs=constant(()),
)
