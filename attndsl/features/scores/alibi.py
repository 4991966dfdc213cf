"""``alibi``: ``s -= slope[h] * |q - k|``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import Feature, Score, constant, span_field


@dataclass(frozen=True, slots=True)
class Alibi(Score):
    span: Span | None = span_field()


def alibi_slopes(heads: int) -> np.ndarray:
    """Press et al. slopes; for a head count that is not a power of two, BLOOM's rule: the
    closest lower power of two n gives the first n slopes, every other slope of 2n the rest."""
    n = 2 ** int(math.floor(math.log2(heads)))
    base = 2.0 ** (-8.0 / n)
    slopes = [base ** (i + 1) for i in range(n)]
    if n < heads:
        extra = 2.0 ** (-4.0 / n)
        slopes += [extra ** (2 * i + 1) for i in range(heads - n)]
    return np.asarray(slopes, dtype=np.float64)


def _eval(mod: Alibi, ev, s, allowed):
    return s - alibi_slopes(ev.heads)[:, None, None] * np.abs(ev.rel)[None], allowed


def _lower(mod: Alibi, ctx, s: str) -> str:
    g, pos = ctx.g, ctx.pos
    slopes = alibi_slopes(ctx.block.heads).reshape(-1, *[1] * pos.pair_rank)
    slopes = g.const(slopes, np.float32)
    dist = ctx.to_float(g.op("Abs", pos.q_minus_k))
    return g.sub(s, g.mul(slopes, dist))


FEATURE = Feature(
    name="alibi", kind="score", node=Alibi, doc="s -= slope[h] * |q - k|",
    format=constant("alibi"),
    eval=_eval,
    lower=_lower,
    ort=constant(("add", "alibi")),
    inputs=constant(()),
    weights=constant({}),
)
