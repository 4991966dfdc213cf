"""``mask(m)``: a bool input broadcastable to ``[batch, heads, q_len, k_len]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import NO_WITNESS, UNBOUNDED, Algebra, Feature, Mask, Param, Tiles, constant, span_field


@dataclass(frozen=True, slots=True)
class MaskInput(Mask):
    """``mask(m)``: a bool input broadcastable to ``[batch, heads, q_len, k_len]``."""

    input: str
    span: Span | None = span_field()


def _eval(m: MaskInput, ev):
    a = np.asarray(ev.inputs[m.input]).astype(bool)
    return a.reshape((1,) * (4 - a.ndim) + a.shape)


FEATURE = Feature(
    name="mask", kind="mask", node=MaskInput,
    params=(Param("m", "input"),), doc="a bool input",
    check=lambda m, ctx: ctx.check_input(m.input, m.span, "mask", ("bool",), (1, 2, 3, 4)),
    format=lambda m: f"mask({m.input})",
    eval=_eval,
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=140),
    tiles=Tiles(support=constant("i")),
    bounds=UNBOUNDED,
    lower=lambda m, ctx: m.input,
    ort=constant("input"),
    viz=constant(0),
    inputs=lambda m: ((m.input, "cells"),),
)
