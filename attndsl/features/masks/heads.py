"""``heads(a, b, ...)``: the head is one of the listed heads (``a..b`` is inclusive)."""

from __future__ import annotations

from collections.abc import Iterable
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
from .none import Never


@dataclass(frozen=True, slots=True)
class Heads(Mask):
    heads: tuple[int, ...]
    span: Span | None = span_field()


def heads_node(hs: Iterable[int], heads: int | None) -> Mask:
    """heads(hs) in canonical form: sorted, unique, clipped to 0..heads-1 when the head count
    is known; none if empty, all if every head."""
    hs = sorted({h for h in hs if heads is None or 0 <= h < heads})
    if not hs:
        return Never()
    if heads is not None and len(hs) == heads:
        return All()
    return Heads(tuple(hs))


def ranges(values: tuple[int, ...]) -> str:
    """Sorted values with runs of three or more written ``a..b``."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(f"{values[i]}..{values[j]}" if j - i >= 2 else
                     ", ".join(str(v) for v in values[i:j + 1]))
        i = j + 1
    return ", ".join(parts)


def _normalize(m: Heads) -> Mask | None:
    """Rule leaf-sort: heads sorted and unique; none if empty."""
    vals = m.heads
    if vals and all(a < b for a, b in zip(vals, vals[1:], strict=False)):
        return None
    return heads_node(vals, None)


def _fold(m: Heads, heads: int) -> Mask | None:
    out = heads_node(m.heads, heads)
    return out if out != m else None


def _merge(a: Heads, b: Heads, is_and: bool) -> Mask:
    return heads_node(set(a.heads) & set(b.heads) if is_and else set(a.heads) | set(b.heads),
                      None)


def _lower(m: Heads, ctx) -> str:
    table = np.isin(np.arange(ctx.block.heads), m.heads)
    return ctx.g.const(table.reshape(-1, *[1] * ctx.pos.pair_rank), bool)


def _check(m: Heads, ctx) -> None:
    bad = [h for h in m.heads if h >= ctx.heads]
    if bad:
        ctx.err(f"heads({bad[0]}) is out of range: the block has {ctx.heads} heads "
                f"(0..{ctx.heads - 1})", m.span)


FEATURE = Feature(
    name="heads", kind="mask", node=Heads,
    params=(Param("h", "int"),), doc="h in the listed heads (a..b is inclusive)", variadic=True,
    make=lambda values, span: Heads(tuple(values), span=span),
    check=_check,
    format=lambda m: f"heads({ranges(m.heads)})",
    eval=lambda m, ev: np.isin(np.arange(ev.heads), m.heads)[None, :, None, None],
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=10, implies=lambda a, b: set(a.heads) <= set(b.heads),
                    disjoint=lambda a, b: not set(a.heads) & set(b.heads),
                    merge=_merge, normalize=_normalize, fold=_fold,
                    fold_not=lambda m, heads: heads_node(set(range(heads)) - set(m.heads),
                                                         heads)),
    tiles=Tiles(support=constant("p"), heads=lambda m: m.heads),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=NO_FUSED,
    viz=constant(0),
    inputs=constant(()),
)
