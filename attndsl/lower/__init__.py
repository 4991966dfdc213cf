"""The lower layer: all ONNX knowledge. IR -> ONNX lowerings per target (``targets``,
``lowering``, ``onnx_portable``, ``ort_contrib`` and their parts), graph passes
(``graph_passes``), the pipeline of both pass stages (``pipeline``), and compiling: the
checker and the metadata (``compile``).

Only ``targets`` is imported here: it is plain data (no onnx), so the command line can read
the targets, opsets and sparse strategies without loading the lowering. Import the other
modules by name (``from attndsl.lower.compile import compile_model``).
"""

from .targets import (
    DEFAULT_OPSET,
    DEFAULT_SPARSE,
    DEFAULT_TARGET,
    OPSETS,
    SPARSE_MODES,
    TARGET_NAMES,
    TARGETS,
    Target,
    check_opset,
)

__all__ = ["DEFAULT_OPSET", "DEFAULT_SPARSE", "DEFAULT_TARGET", "OPSETS", "SPARSE_MODES",
           "TARGETS", "TARGET_NAMES", "Target", "check_opset"]
