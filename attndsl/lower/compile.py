"""Compile a model to ONNX: IR passes, lowering for the target, graph passes, metadata, the
ONNX checker; save atomically (weights inline or as external data, ``lower.external_data``).

The weights stay outside the graph until the end (``lower.weight_store``): the graph passes
and the checker work on the weight-free model, and the arrays are converted once, into the
in-memory model (``compile_model``) or straight into the file (``compile_to_file``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import AttnDSLError, LoweringError, did_you_mean
from ..fileio import write_atomic
from ..ir.nodes import Model
from ..limits import check_model
from ..passes import Program
from ..version import __version__
from ..weights import check_weights, describe_conversions, load_weights
from .external_data import SavedModel, check_external_options, save_detached
from .lowering import lower_with_explanations
from .onnx_portable import BlockExplanation
from .pipeline import DEFAULT_PIPELINE, resolve, run_graph_passes, run_passes
from .plan import SparseOptions
from .progress import Progress, reporting
from .targets import DEFAULT_OPSET, DEFAULT_SPARSE, DEFAULT_TARGET, SPARSE_MODES, check_opset
from .weight_store import DetachedModel, checker_view, holding_weights


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

    The IR passes of the pipeline run before lowering, its graph passes after it (on the
    weight-free model, ``compile_detached``); the weights are attached at the end."""
    detached, explain = compile_detached(model, weights, options)
    return detached.attach(), explain


def compile_detached(model: Model, weights: Mapping[str, np.ndarray] | None = None,
                     options: CompileOptions | None = None, progress: Progress | None = None
                     ) -> tuple[DetachedModel, list[BlockExplanation]]:
    """``compile_with_explanations`` without attaching the weights: the checked weight-free
    model (parameters as stubs, ``lower.weight_store``) and the arrays by name.

    The lowering hands the parameters' arrays over by reference (no copy when they already
    have the model's dtype); graph passes, shape inference and the checker never see a
    weight byte (``weight_store.checker_view`` says what the checker checks). Weights
    read from a file (``weights.load_weights``) carry the type conversions made reading
    them; the model records them in its ``attndsl.weights_conversions`` metadata."""
    options = options or CompileOptions()
    check_model(model)  # before any weight or table is made
    progress = progress or Progress.silent()
    check_opset(options.opset, options.target)
    progress.phase("reading weights", 0)
    if weights is None:
        weights = load_weights(model)
    conversions = describe_conversions(getattr(weights, "conversions", ()))
    weights = check_weights(model, dict(weights), "weights")  # before passes reshape them
    passes = resolve(DEFAULT_PIPELINE if options.passes is None else options.passes)
    progress.phase("IR passes", 0)
    program = run_passes(Program(model, weights), passes)
    del weights  # the program holds them (and drops those the IR passes replaced)
    progress.phase("lowering", len(program.model.blocks), "blocks")
    with holding_weights() as held:
        proto, explain = lower_with_explanations(program.model, program.weights, options.opset,
                                                 options.target, options.sparse_options())
    del program
    progress.phase("graph passes", 0)
    proto = run_graph_passes(proto, passes)
    proto.producer_name = "attndsl"
    proto.producer_version = __version__
    proto.doc_string = f"attndsl model '{model.name}'"
    for key, value in (("attndsl.spec", model.spec_text), ("attndsl.version", __version__),
                       ("attndsl.opset", str(options.opset)),
                       ("attndsl.target", options.target),
                       ("attndsl.passes", ",".join(p.name for p in passes)),
                       *([("attndsl.weights_conversions", conversions)] if conversions else [])):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    progress.phase("checking", 0)
    try:
        onnx.checker.check_model(checker_view(proto), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise LoweringError(f"the emitted ONNX model fails the checker: {err}",
                            hint="this is a compiler bug; please report it") from None
    return DetachedModel(proto, held), explain


def compile_to_file(model: Model, path: str | Path,
                    weights: Mapping[str, np.ndarray] | None = None,
                    options: CompileOptions | None = None, external: str = "auto",
                    external_threshold: int | None = None,
                    progress: Progress | None = None
                    ) -> tuple[SavedModel, list[BlockExplanation]]:
    """Compile and save to ``path`` atomically, the weights inline or as external data
    (``lower.external_data``: ``external`` is ``auto | always | never``, ``auto`` switching
    above ``external_threshold`` bytes). The weights are never copied into a full in-memory
    model when they go to the external data file.

    ``progress`` (default: a bar on stderr when it is a terminal and the work takes more
    than two seconds; ``Progress.silent()`` for none) shows blocks lowered and bytes
    written."""
    check_external_options(external, external_threshold)
    progress = Progress() if progress is None else progress
    with reporting(progress):
        detached, explain = compile_detached(model, weights, options, progress)
        try:
            saved = save_detached(detached, path, external, external_threshold, progress)
        except OSError as err:
            raise AttnDSLError(f"cannot write '{path}': {err.strerror or err}") from None
    return saved, explain


def model_bytes(proto: onnx.ModelProto) -> bytes:
    """Deterministic serialization."""
    return proto.SerializeToString(deterministic=True)


def save_model_atomic(proto: onnx.ModelProto, path: str | Path) -> None:
    """Write ``proto`` to ``path`` atomically (``fileio.write_atomic``)."""
    write_atomic(path, model_bytes(proto))
