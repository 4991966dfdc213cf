"""The combinators ``&``, ``|`` and ``~``: their rules live in the same tables as the
primitives', so every engine dispatches on the node class alone."""

from __future__ import annotations

import numpy as np

from ..base import (
    NO_FUSED,
    Algebra,
    And,
    Feature,
    Mask,
    Not,
    Or,
    Tiles,
    children,
    constant,
    witness_all,
)

# ---------------------------------------------------------------- evaluation


def _eval_not(m: Not, ev):
    return ~ev.eval(m.term)


def _eval_and(m: And, ev):
    out = np.ones((1, 1, 1, 1), bool)
    for t in m.terms:
        out = out & ev.eval(t)
    return out


def _eval_or(m: Or, ev):
    out = np.zeros((1, 1, 1, 1), bool)
    for t in m.terms:
        out = out | ev.eval(t)
    return out


# ---------------------------------------------------------------- witnesses


def _witness_and(m: And, diagonal: bool, sub) -> frozenset[str]:
    out = witness_all(m, diagonal, sub)
    for t in m.terms:
        out &= sub(t, diagonal)
    return out


def _witness_or(m: Or, diagonal: bool, sub) -> frozenset[str]:
    out: frozenset[str] = frozenset()
    for t in m.terms:
        out |= sub(t, diagonal)
    return out


# ---------------------------------------------------------------- tiles


def _support(m: Mask, sub) -> str:
    kids = {sub(c) for c in children(m)} - {"c"}
    if "i" in kids:
        return "i"
    if len(kids) == 1:
        return kids.pop()
    return "p" if kids else "c"


# ---------------------------------------------------------------- offset bounds


def _bounds_not(m: Not, ctx):
    """The complement of a one-sided run of offsets."""
    o = ctx.offsets(m.term)
    if o is not None and o[2] == 1 and (o[0] is None) != (o[1] is None):
        return (o[1] + 1, None) if o[0] is None else (None, o[0] - 1)
    return None, None


def _bounds_and(m: And, ctx):
    lo: int | None = None
    hi: int | None = None
    for t in m.terms:
        tb = ctx.bounds(t)
        if tb is None:
            return None
        lo = tb[0] if lo is None else lo if tb[0] is None else max(lo, tb[0])
        hi = tb[1] if hi is None else hi if tb[1] is None else min(hi, tb[1])
    return None if lo is not None and hi is not None and lo > hi else (lo, hi)


def _bounds_or(m: Or, ctx):
    parts = [tb for tb in map(ctx.bounds, m.terms) if tb is not None]
    if not parts:
        return None
    los, his = [p[0] for p in parts], [p[1] for p in parts]
    return (None if None in los else min(los)), (None if None in his else max(his))


# ---------------------------------------------------------------- lowering


def _lower_not(m: Not, ctx):
    inner = ctx.lower(m.term)
    return (not inner) if isinstance(inner, bool) else ctx.g.not_(inner)


def _lower_combine(m: And | Or, ctx):
    is_and = isinstance(m, And)
    parts: list[str] = []
    for term in m.terms:
        v = ctx.lower(term)
        if isinstance(v, bool):
            if v != is_and:  # False in an And, True in an Or decides
                return v
            continue
        if v not in parts:
            parts.append(v)
    if not parts:
        return is_and
    out = parts[0]
    for v in parts[1:]:
        out = ctx.g.and_(out, v) if is_and else ctx.g.or_(out, v)
    return out


def _common(name: str, node: type, **rules) -> Feature:
    return Feature(name=name, kind="combinator", node=node, bounds=rules.pop("bounds"),
                   tiles=rules.pop("tiles"), ort=NO_FUSED,  # And is flattened before
                   viz=constant(0), inputs=constant(()), **rules)


FEATURES = (
    _common("not", Not, doc="~x", eval=_eval_not,
            witnesses=constant(frozenset()), algebra=Algebra(rank=150),
            tiles=Tiles(support=_support,
                        classify=lambda m, grid: grid.negate(grid.classify(m.term))),
            bounds=_bounds_not, lower=_lower_not),
    _common("and", And, doc="x & y", eval=_eval_and, witnesses=_witness_and,
            algebra=Algebra(rank=160),
            tiles=Tiles(support=_support, classify=lambda m, grid: grid.combine(m, True)),
            bounds=_bounds_and, lower=_lower_combine),
    _common("or", Or, doc="x | y", eval=_eval_or, witnesses=_witness_or,
            algebra=Algebra(rank=170),
            tiles=Tiles(support=_support, classify=lambda m, grid: grid.combine(m, False)),
            bounds=_bounds_or, lower=_lower_combine),
)
