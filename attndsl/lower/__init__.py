"""Lowerings from the IR to ONNX (the only package, with ``runtime``, that imports onnx)."""

from .onnx_portable import SUPPORTED_OPSETS, check_opset, lower_portable

__all__ = ["SUPPORTED_OPSETS", "check_opset", "lower_portable"]
