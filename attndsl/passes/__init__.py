"""Optimizer passes: IR passes on the ``Program`` (model + weights) before lowering, graph
passes on the ONNX model after it; one module per pass, the pipeline in ``pipeline``."""

from .base import GraphPass, IRPass, Pass, PassResult, Program
from .pipeline import (
    DEFAULT_PIPELINE,
    REGISTRY,
    PassManager,
    get_pass,
    graph_text,
    ir_after,
    model_after,
    parse_pass_list,
    resolve,
    run_graph_passes,
    run_passes,
)

__all__ = [
    "DEFAULT_PIPELINE", "REGISTRY", "GraphPass", "IRPass", "Pass", "PassManager", "PassResult",
    "Program", "get_pass", "graph_text", "ir_after", "model_after", "parse_pass_list", "resolve",
    "run_graph_passes", "run_passes",
]
