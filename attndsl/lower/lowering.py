"""Target name -> lowering class, and the entry point that lowers a model for a target.

This module sits above both lowerings: ``onnx_portable.PortableLowering`` is the base,
``ort_contrib.OrtLowering`` subclasses it, and neither imports this table. A new target is a
``Target`` in ``targets.py`` (its name and opsets, which the command line reads) and its class
here; a test checks that the two tables name the same targets.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from ..ir.nodes import Model
from .onnx_portable import BlockExplanation, PortableLowering
from .ort_contrib import OrtLowering
from .plan import SparseOptions
from .targets import DEFAULT_OPSET, ORT, PORTABLE, check_opset

LOWERINGS: dict[str, type[PortableLowering]] = {
    PORTABLE.name: PortableLowering,
    ORT.name: OrtLowering,  # ORT fused kernels per block where exact (ort_contrib)
}


def lower_with_explanations(model: Model, weights: Mapping[str, np.ndarray],
                            opset: int = DEFAULT_OPSET,
                            target: str = PORTABLE.name, sparse: SparseOptions | None = None
                            ) -> tuple[onnx.ModelProto, list[BlockExplanation]]:
    """The ONNX model and, per block, the lowering chosen and why."""
    check_opset(opset, target)
    lowering = LOWERINGS[target](model, weights, opset, sparse=sparse)
    return lowering.run(), lowering.explain
