"""``softcap(c)``: ``s = c * tanh(s / c)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import Feature, Param, Score, constant, format_value, span_field


@dataclass(frozen=True, slots=True)
class Softcap(Score):
    cap: float
    span: Span | None = span_field()


def _lower(mod: Softcap, ctx, s: str) -> str:
    g = ctx.g
    cap = g.scalar(mod.cap, np.float32)
    return g.mul(g.op("Tanh", g.div(s, cap)), cap)


FEATURE = Feature(
    name="softcap", kind="score", node=Softcap,
    params=(Param("c", "float"),), doc="s = c * tanh(s / c)",
    format=lambda mod: f"softcap({format_value(mod.cap)})",
    eval=lambda mod, ev, s, allowed: (mod.cap * np.tanh(s / mod.cap), allowed),
    lower=_lower,
    ort=lambda mod: ("softcap", mod.cap),
    inputs=constant(()),
    weights=constant({}),
)
