"""``all``: every cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import Algebra, Feature, Mask, Tiles, constant, span_field, witness_all


@dataclass(frozen=True, slots=True)
class All(Mask):
    span: Span | None = span_field()


FEATURE = Feature(
    name="all", kind="mask", node=All, doc="always true",
    format=constant("all"),
    eval=lambda m, ev: np.ones((1, 1, 1, 1), bool),
    witnesses=witness_all,
    algebra=Algebra(rank=180),
    tiles=Tiles(support=constant("c")),
    bounds=constant((None, None)),
    lower=constant(True),
    ort=constant((-np.inf, np.inf)),
    viz=constant(0),
    inputs=constant(()),
)
