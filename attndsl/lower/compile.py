"""Compile a model to ONNX: IR passes, lowering for the target, graph passes, the ONNX
checker, metadata; save atomically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import LoweringError, did_you_mean
from ..fileio import write_atomic
from ..ir.nodes import Model
from ..limits import check_model
from ..passes import Program
from ..version import __version__
from ..weights import check_weights, load_weights
from .lowering import lower_with_explanations
from .onnx_portable import BlockExplanation
from .pipeline import DEFAULT_PIPELINE, resolve, run_graph_passes, run_passes
from .plan import SparseOptions
from .targets import DEFAULT_OPSET, DEFAULT_SPARSE, DEFAULT_TARGET, SPARSE_MODES, check_opset


@dataclass(frozen=True)
class CompileOptions:
    """How to compile: ONNX opset; target ``portable`` (standard ops) or ``ort`` (ONNX Runtime
    fused kernels where a block maps exactly); block-sparse strategy ``auto | dense | block``
    (``lower/plan.py``), its tile size (None: the cost model picks) and the length at which
    ``auto`` costs dynamic dims (None: 4096); optimization passes (None: the default
    pipeline, ``()``: none — the CLI's ``--no-opt``)."""

    opset: int = DEFAULT_OPSET
    target: str = DEFAULT_TARGET
    sparse: str = DEFAULT_SPARSE
    block_size: int | None = None
    passes: tuple[str, ...] | None = None
    seq_hint: int | None = None

    def sparse_options(self) -> SparseOptions:
        """The block-sparse settings, checked."""
        if self.sparse not in SPARSE_MODES:
            raise LoweringError(f"unknown sparse strategy {self.sparse!r}",
                                hint=did_you_mean(self.sparse, SPARSE_MODES)
                                or f"choose one of {', '.join(SPARSE_MODES)}")
        for name in ("block_size", "seq_hint"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise LoweringError(f"{name.replace('_', '-')} must be a positive integer, "
                                    f"got {value!r}")
        return SparseOptions(self.sparse, self.block_size, self.seq_hint)


def compile_model(model: Model, weights: Mapping[str, np.ndarray] | None = None,
                  opset: int = DEFAULT_OPSET,
                  options: CompileOptions | None = None) -> onnx.ModelProto:
    """The model as a checked ONNX ModelProto (``options`` win over ``opset``).

    ``weights`` default to the spec's weights file, else the seeded ones. The result is the
    same bytes for the same model, weights, options and compiler version."""
    return compile_with_explanations(model, weights, options or CompileOptions(opset=opset))[0]


def compile_with_explanations(model: Model, weights: Mapping[str, np.ndarray] | None = None,
                              options: CompileOptions | None = None
                              ) -> tuple[onnx.ModelProto, list[BlockExplanation]]:
    """The checked model and, per block, which lowering was chosen and why (``--explain``).

    ``onnx.checker.check_model(full_check=True)`` runs for every target; for the ``ort``
    target it skips the ``com.microsoft`` nodes (onnx has no schemas for that domain).

    The IR passes of the pipeline run before lowering, its graph passes after it."""
    options = options or CompileOptions()
    check_model(model)  # before any weight or table is made
    check_opset(options.opset, options.target)
    if weights is None:
        weights = load_weights(model)
    weights = check_weights(model, dict(weights), "weights")  # before passes reshape them
    passes = resolve(DEFAULT_PIPELINE if options.passes is None else options.passes)
    program = run_passes(Program(model, weights), passes)
    proto, explain = lower_with_explanations(program.model, program.weights, options.opset,
                                             options.target, options.sparse_options())
    proto = run_graph_passes(proto, passes)
    proto.producer_name = "attndsl"
    proto.producer_version = __version__
    proto.doc_string = f"attndsl model '{model.name}'"
    for key, value in (("attndsl.spec", model.spec_text), ("attndsl.version", __version__),
                       ("attndsl.opset", str(options.opset)),
                       ("attndsl.target", options.target),
                       ("attndsl.passes", ",".join(p.name for p in passes))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise LoweringError(f"the emitted ONNX model fails the checker: {err}",
                            hint="this is a compiler bug; please report it") from None
    return proto, explain


def model_bytes(proto: onnx.ModelProto) -> bytes:
    """Deterministic serialization."""
    return proto.SerializeToString(deterministic=True)


def save_model_atomic(proto: onnx.ModelProto, path: str | Path) -> None:
    """Write ``proto`` to ``path`` atomically (``fileio.write_atomic``)."""
    write_atomic(path, model_bytes(proto))
