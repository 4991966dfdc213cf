"""``bias(t)``: ``s += t`` for a float input broadcastable to ``[batch, heads, q_len, k_len]``;
-inf cells are masked out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import Feature, Param, Score, span_field


@dataclass(frozen=True, slots=True)
class BiasInput(Score):
    """``bias(t)``: a float input broadcastable to ``[batch, heads, q_len, k_len]``."""

    input: str
    span: Span | None = span_field()


def _eval(mod: BiasInput, ev, s, allowed):
    t = np.asarray(ev.inputs[mod.input], np.float64)
    s = s + t
    allowed &= np.broadcast_to(~np.isneginf(t.reshape((1,) * (4 - t.ndim) + t.shape)), s.shape)
    return s, allowed


FEATURE = Feature(
    name="bias", kind="score", node=BiasInput,
    params=(Param("t", "input"),), doc="s += t",
    check=lambda mod, ctx: ctx.check_input(mod.input, mod.span, "bias", ctx.float_dtypes,
                                           (1, 2, 3, 4)),
    format=lambda mod: f"bias({mod.input})",
    eval=_eval,
    lower=lambda mod, ctx, s: ctx.g.add(s, ctx.float32(mod.input)),
    ort=lambda mod: ("add", f"bias({mod.input})"),
    inputs=lambda mod: ((mod.input, "cells"),),
    weights=lambda mod, block: {},
)
