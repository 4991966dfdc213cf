"""``none``: no cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import NO_FUSED, NO_WITNESS, Algebra, Feature, Mask, Tiles, constant, span_field


@dataclass(frozen=True, slots=True)
class Never(Mask):
    """Spelled ``none``."""

    span: Span | None = span_field()


FEATURE = Feature(
    name="none", kind="mask", node=Never, doc="never true",
    format=constant("none"),
    eval=lambda m, ev: np.zeros((1, 1, 1, 1), bool),
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=190),
    tiles=Tiles(support=constant("c")),
    bounds=constant(None),  # no cell at all
    lower=constant(False),
    ort=NO_FUSED,
    viz=constant(0),
    inputs=constant(()),
)
