"""Compile a model to ONNX: lower, check, stamp metadata; save atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from .errors import LoweringError
from .ir.nodes import Model
from .lower import check_opset, lower_portable
from .weights import load_weights


def compile_model(model: Model, weights: Mapping[str, np.ndarray] | None = None,
                  opset: int = 18) -> onnx.ModelProto:
    """The model as a checked ONNX ModelProto (portable standard ops).

    ``weights`` default to the spec's weights file, else the seeded ones. The result is the
    same bytes for the same model, weights, opset and compiler version."""
    from . import __version__

    check_opset(opset)
    if weights is None:
        weights = load_weights(model)
    proto = lower_portable(model, weights, opset)
    proto.producer_name = "attndsl"
    proto.producer_version = __version__
    proto.doc_string = f"attndsl model '{model.name}'"
    for key, value in (("attndsl.spec", model.spec_text), ("attndsl.version", __version__),
                       ("attndsl.opset", str(opset)), ("attndsl.target", "portable")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise LoweringError(f"the emitted ONNX model fails the checker: {err}",
                            hint="this is a compiler bug; please report it") from None
    return proto


def model_bytes(proto: onnx.ModelProto) -> bytes:
    """Deterministic serialization."""
    return proto.SerializeToString(deterministic=True)


def save_model_atomic(proto: onnx.ModelProto, path: str | Path) -> None:
    """Write ``proto`` to ``path`` through a temporary file in the same directory and
    ``os.replace``: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    data = model_bytes(proto)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
