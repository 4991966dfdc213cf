"""``padding(len)``: ``k < len[b]`` for an int ``[batch]`` input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import NO_WITNESS, UNBOUNDED, Algebra, Feature, Mask, Param, Tiles, constant, span_field


@dataclass(frozen=True, slots=True)
class Padding(Mask):
    """``k < len[b]``; ``input`` names an int64 ``[batch]`` input. ``prefix(len)`` is the same."""

    input: str
    span: Span | None = span_field()


def _eval(m: Padding, ev):
    lens = np.asarray(ev.inputs[m.input]).astype(np.int64)
    return ev.k < lens[:, None, None, None]


def _lower(m: Padding, ctx) -> str:
    g, p = ctx.g, ctx.pos
    lens = g.reshape(ctx.int64_input(m.input), [-1, *[1] * (p.pair_rank + 1)])
    return g.less(p.k, lens)


FEATURE = Feature(
    name="padding", kind="mask", node=Padding,
    params=(Param("len", "input"),), doc="k < len[b]",
    check=lambda m, ctx: ctx.check_input(m.input, m.span, "padding/prefix", ("int64", "int32"),
                                         (1,)),
    format=lambda m: f"padding({m.input})",
    eval=_eval,
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=120),
    tiles=Tiles(support=constant("i")),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=constant("input"),
    viz=constant(0),
    inputs=lambda m: ((m.input, "lengths"),),
)
