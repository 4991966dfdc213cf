"""IR optimizer passes: rewrites of the ``Program`` (model + weights) before lowering, one
module per pass, the registry and the pass manager in ``pipeline``. This package knows
nothing of ONNX: the graph passes over the lowered model, and the pipeline that runs both
stages by name, are in ``lower.graph_passes`` and ``lower.pipeline``."""

from .base import IRPass, Pass, PassResult, Program
from .pipeline import IR_PASSES, PassManager, run_ir_passes

__all__ = ["IR_PASSES", "IRPass", "Pass", "PassManager", "PassResult", "Program",
           "run_ir_passes"]
