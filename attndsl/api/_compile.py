"""Compiling from Python: ``compile`` (a ModelProto), ``compile_to`` (a file, atomically),
``ir_text`` (what ``attndsl ir`` prints) and ``convert`` (YAML <-> ``.attn`` files).

The ONNX-side modules are imported inside the functions, so that ``import attndsl`` and the
command line's ``--help`` stay quick.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from ..errors import AttnDSLError
from ..ir import Model, print_ir
from . import _spec
from ._spec import Spec

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from ..lower.onnx_portable import BlockExplanation

__all__ = ["CompileResult", "SpecLike", "WeightsLike", "compile", "compile_to", "convert",
           "ir_text", "model_of"]

SpecLike: TypeAlias = str | os.PathLike[str] | Spec | Model
"""What the functions take as a spec: a spec file's path, a ``Spec`` or a checked IR
``Model``."""
WeightsLike: TypeAlias = "str | os.PathLike[str] | Mapping[str, np.ndarray]"
"""Weights: a ``.safetensors`` / ``.npz`` file, or arrays by name (numpy is imported when
needed, so the alias is a string)."""


def model_of(spec: SpecLike) -> Model:
    """The checked IR of ``spec`` (a path is read with ``load_spec``)."""
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, Spec):
        return spec.model()
    if isinstance(spec, (str, os.PathLike)):
        if isinstance(spec, str) and "\n" in spec:
            raise AttnDSLError("expected the path of a spec file, got text",
                               hint="use attndsl.Spec.parse(text) for spec text")
        return _spec.load_spec(spec)
    raise AttnDSLError(f"expected a spec path, a Spec or a Model, got {type(spec).__name__}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pass_names(passes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """None (the default pipeline), or the pass names, checked: ``"a,b"`` as on the command
    line, or a sequence of names."""
    from ..lower.pipeline import get_pass, parse_pass_list

    if passes is None:
        return None
    if isinstance(passes, str):
        return tuple(parse_pass_list(passes))
    if not isinstance(passes, Sequence) or not all(isinstance(p, str) for p in passes):
        raise AttnDSLError(f"passes must be pass names, got {passes!r}")
    for name in passes:
        get_pass(name)
    return tuple(passes)


def _weights(model: Model, weights: WeightsLike | None) -> Mapping[str, np.ndarray] | None:
    """Arrays by name (checked when compiled), or None for the spec's (file, else seeded)."""
    if weights is None or isinstance(weights, Mapping):
        return weights
    if isinstance(weights, (str, os.PathLike)):
        from ..weights import load_weights

        return load_weights(model, weights)
    raise AttnDSLError(f"weights must be a file path or arrays by name, got "
                       f"{type(weights).__name__}")


def _compile(model: Model, *, opset: int, target: str, sparse: str, block_size: int | None,
             seq_hint: int | None, passes: str | Sequence[str] | None,
             weights: WeightsLike | None) -> tuple[onnx.ModelProto, list[BlockExplanation]]:
    from ..lower.compile import CompileOptions, compile_with_explanations

    arrays = _weights(model, weights)
    if not _is_int(opset):
        raise AttnDSLError(f"opset must be an int, got {opset!r}")
    options = CompileOptions(opset=opset, target=target, sparse=sparse, block_size=block_size,
                             seq_hint=seq_hint, passes=_pass_names(passes))
    return compile_with_explanations(model, arrays, options)


def compile(spec_or_path: SpecLike, *, opset: int = 18, target: str = "portable",
            sparse: str = "auto", block_size: int | None = None, seq_hint: int | None = None,
            passes: str | Sequence[str] | None = None,
            weights: WeightsLike | None = None) -> onnx.ModelProto:
    """Compile a spec to a checked ONNX model, as ``attndsl compile`` does (same options,
    same bytes).

    ``opset``: 17..21 for the ``portable`` target, 17..24 for ``ort``. ``target``:
    ``'portable'`` (standard ops only) or ``'ort'`` (ONNX Runtime's fused kernels where a
    block maps exactly). ``sparse``: ``'auto'`` (cost model), ``'dense'`` or ``'block'``;
    ``block_size`` its tile size and ``seq_hint`` the length ``'auto'`` costs dynamic dims
    at (None: the cost model's choices). ``passes``: None (the default pipeline), ``()``
    (none), names or ``"a,b"``. ``weights``: a file or arrays by name (None: the spec's
    weights file, else weights drawn from its seed). A bad option raises an AttnDSLError.
    """
    return _compile(model_of(spec_or_path), opset=opset, target=target, sparse=sparse,
                    block_size=block_size, seq_hint=seq_hint, passes=passes,
                    weights=weights)[0]


@dataclass(frozen=True)
class CompileResult:
    """What ``compile_to`` wrote: the file, the spec's IR, the ONNX model, per block the
    lowering chosen and why, and the size of the file in bytes; with external data, the
    data file and its size (``proto`` then refers to that file: run the model by path)."""

    path: Path
    model: Model
    proto: onnx.ModelProto
    explanations: tuple[BlockExplanation, ...]
    size: int
    data_path: Path | None = None
    data_size: int = 0

    @property
    def parameters(self) -> int:
        """The number of parameters of the spec (before the passes reshape them)."""
        return sum(math.prod(s) for s in self.model.weight_shapes().values())


def compile_to(spec_or_path: SpecLike, path: str | os.PathLike[str], *, opset: int = 18,
               target: str = "portable", sparse: str = "auto", block_size: int | None = None,
               seq_hint: int | None = None, passes: str | Sequence[str] | None = None,
               weights: WeightsLike | None = None, external_data: str = "auto",
               external_data_threshold: int | None = None,
               progress: bool = False) -> CompileResult:
    """Compile (options as ``compile``) and write the model to ``path`` atomically: readers
    see the old file or the new one, and a failed compile leaves an existing file as it
    was.

    ``external_data``: ``'auto'`` writes the weights to ``PATH.data`` next to the model when
    the model would exceed ``external_data_threshold`` bytes (default 2,000,000,000, below
    protobuf's 2 GiB limit), ``'always'``, or ``'never'`` (docs/large-models.md).
    ``progress``: draw a progress bar on stderr when it is a terminal and the compile takes
    more than two seconds."""
    from ..lower.compile import CompileOptions, compile_to_file
    from ..lower.progress import Progress

    model = model_of(spec_or_path)
    arrays = _weights(model, weights)
    if not _is_int(opset):
        raise AttnDSLError(f"opset must be an int, got {opset!r}")
    options = CompileOptions(opset=opset, target=target, sparse=sparse, block_size=block_size,
                             seq_hint=seq_hint, passes=_pass_names(passes))
    saved, explain = compile_to_file(model, path, arrays, options, external=external_data,
                                     external_threshold=external_data_threshold,
                                     progress=Progress() if progress else Progress.silent())
    return CompileResult(Path(path), model, saved.proto, tuple(explain), saved.model_bytes,
                         saved.data_path, saved.data_bytes)


def ir_text(spec_or_path: SpecLike, *, after: str | None = None,
            weights: WeightsLike | None = None) -> str:
    """The checked IR as text (the golden-file format); with ``after``, the program after
    the default pipeline up to and including that pass (a graph pass gives the ONNX graph
    as text). ``weights`` as in ``compile``."""
    model = model_of(spec_or_path)
    if after is None:
        return print_ir(model)
    from ..limits import check_model
    from ..lower.pipeline import ir_after
    from ..weights import check_weights, load_weights

    check_model(model)
    arrays = _weights(model, weights)
    arrays = load_weights(model) if arrays is None else check_weights(model, dict(arrays),
                                                                      "weights")
    return ir_after(model, arrays, after)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert a valid spec file between YAML and ``.attn`` (syntaxes by extension), written
    atomically; a relative ``weights`` path keeps naming the same file. Returns ``dst``."""
    from ..convert import convert_file

    convert_file(src, dst)
    return Path(dst)
