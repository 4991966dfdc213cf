"""The pass registry of both stages, the default pipeline, and running a pipeline by name.

A pipeline is a list of pass names (or pass objects). Its IR passes (``attndsl.passes``) run
on the ``Program`` before lowering, its graph passes (``lower.graph_passes``) on the ONNX
model after it, each stage in list order, each through the ``passes.PassManager``.
``stop_after`` cuts the list after the named pass, which is how ``attndsl ir SPEC --after
PASS`` shows the program at any point. The names of a compiled model's pipeline are stamped
in its ``attndsl.passes`` metadata (``lower.compile``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from ..errors import AttnDSLError, did_you_mean
from ..ir.nodes import Model
from ..ir.printer import print_ir
from ..passes import IR_PASSES, Pass, PassManager, Program, run_ir_passes
from .graph_passes import GRAPH_PASSES
from .onnx_portable import lower_portable
from .targets import DEFAULT_OPSET
from .text import graph_text
from .weight_store import DetachedModel, holding_weights

REGISTRY: dict[str, type[Pass]] = {**IR_PASSES, **GRAPH_PASSES}

# IR passes, then graph passes
DEFAULT_PIPELINE = ["canonicalize-masks", "dead-outputs", "fold-scale", "fuse-qkv",
                    "share-computations", "fold-constants"]

PassSpec = str | Pass


def get_pass(name: str) -> Pass:
    """A pass (of either stage) with default options, by name."""
    cls = REGISTRY.get(name)
    if cls is None:
        hint = did_you_mean(name, REGISTRY) or f"known passes: {', '.join(REGISTRY)}"
        raise AttnDSLError(f"unknown pass '{name}'", hint=hint)
    return cls()


def resolve(passes: Iterable[PassSpec] | None = None,
            stop_after: str | None = None) -> list[Pass]:
    """Pass objects for ``passes`` (default: ``DEFAULT_PIPELINE``), cut after ``stop_after``."""
    names = DEFAULT_PIPELINE if passes is None else list(passes)
    out = [get_pass(p) if isinstance(p, str) else p for p in names]
    if stop_after is not None:
        get_pass(stop_after)  # unknown names get the did-you-mean error
        where = [i for i, p in enumerate(out) if p.name == stop_after]
        if not where:
            raise AttnDSLError(f"pass '{stop_after}' is not in the pipeline",
                               hint=f"the pipeline is {', '.join(p.name for p in out)}")
        out = out[:where[0] + 1]
    return out


def parse_pass_list(text: str) -> list[str]:
    """``"a,b"`` (the ``--passes`` syntax) -> ``["a", "b"]``, names checked."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        get_pass(name)
    return names


def run_passes(program: Program, passes: Iterable[PassSpec] | None = None,
               stop_after: str | None = None) -> Program:
    """The IR passes of the pipeline, run on ``program``."""
    return run_ir_passes(program, [p for p in resolve(passes, stop_after) if p.stage == "ir"])


def run_graph_passes(proto: onnx.ModelProto, passes: Iterable[PassSpec] | None = None,
                     stop_after: str | None = None) -> onnx.ModelProto:
    """The graph passes of the pipeline, run on the lowered ``onnx.ModelProto``."""
    selected = [p for p in resolve(passes, stop_after) if p.stage == "graph"]
    return PassManager(selected).run(proto).program if selected else proto


def model_after(model: Model, passes: Iterable[PassSpec] | None = None) -> Model:
    """The IR model the IR passes of ``passes`` make of ``model``: the layout the initializers
    of a model compiled with ``passes`` follow (``attndsl run --verify`` reads a compiled
    file's ``attndsl.passes`` metadata and checks it against the reference of this model).
    IR passes decide from the model alone, never from weight values, and the weights they
    make are deferred (``arrays.py``), so zero-stride stand-ins of the right shapes (no
    memory, nothing computed) take the real ones' place."""
    selected = [p for p in resolve(passes) if p.stage == "ir"]
    if not selected:
        return model
    dtype = np.float16 if model.dtype == "float16" else np.float32
    stand_ins = {name: np.broadcast_to(dtype(0), shape)
                 for name, shape in model.weight_shapes().items()}
    return run_passes(Program(model, stand_ins), selected).model


def ir_after(model: Model, weights: Mapping[str, np.ndarray], pass_name: str,
             passes: Iterable[PassSpec] | None = None, opset: int = DEFAULT_OPSET) -> str:
    """The program after the default pipeline (or ``passes``) up to and including
    ``pass_name``: the IR print for an IR pass, the graph as text (without initializer data)
    for a graph pass."""
    selected = resolve(passes, stop_after=pass_name)
    program = run_passes(Program(model, weights), selected)
    if selected[-1].stage == "ir":
        return print_ir(program.model)
    with holding_weights() as held:  # the graph passes run without the weight bytes
        proto = lower_portable(program.model, program.weights, opset)
    return graph_text(DetachedModel(run_graph_passes(proto, selected), held).attach())
