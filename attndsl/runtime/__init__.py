"""The runtime layer: ONNX Runtime sessions (provider choice cpu | cuda | auto, running with
named inputs) here, the KV-cache decode loop in ``runtime.decode``.

Models with external data (``lower.external_data``) load by path like any other; an
in-memory model over protobuf's 2 GiB limit is written with external data to a temporary
folder first."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import InputError, RuntimeUnavailable, did_you_mean
from ..lower.external_data import PROTOBUF_LIMIT, save_detached
from ..lower.weight_store import detach_proto

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CHOICES = ("cpu", "cuda", "auto")

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def available_providers() -> list[str]:
    """ONNX Runtime's available execution providers, as attndsl names ("cpu", "cuda")."""
    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


def make_session(model: onnx.ModelProto | bytes | str | Path,
                 provider: str = "cpu") -> ort.InferenceSession:
    """An InferenceSession on ``provider`` (cpu | cuda | auto).

    ``cuda`` without a usable CUDA provider raises RuntimeUnavailable; ``auto`` takes CUDA
    when it is there, else the CPU. The session's ``chosen_provider`` attribute says which
    ran ("cpu" or "cuda"), and ``fallback_note`` explains a fallback (else None)."""
    if provider not in CHOICES:
        raise RuntimeUnavailable(f"unknown execution provider '{provider}'",
                                 hint=did_you_mean(provider, CHOICES)
                                 or f"use one of {', '.join(CHOICES)}")
    has_cuda = "cuda" in available_providers()
    if provider == "cuda" and not has_cuda:
        raise RuntimeUnavailable(
            "CUDA execution provider is not available in this ONNX Runtime "
            f"(available: {', '.join(ort.get_available_providers())})",
            hint="install onnxruntime-gpu with a matching CUDA, or use --provider cpu/auto")
    want_cuda = provider == "cuda" or (provider == "auto" and has_cuda)
    names = [PROVIDERS["cuda"], PROVIDERS["cpu"]] if want_cuda else [PROVIDERS["cpu"]]
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures surface as attndsl errors, not as log lines
    if isinstance(model, onnx.ModelProto):
        _check_no_external_references(model)
    if isinstance(model, onnx.ModelProto) and model.ByteSize() > PROTOBUF_LIMIT:
        session = _session_over_2gb(model, options, names)
    else:
        data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
        if isinstance(data, Path):
            data = str(data)  # by path: ONNX Runtime reads external data next to the file
        session = ort.InferenceSession(data, sess_options=options, providers=names)
    chosen = "cuda" if session.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
    if provider == "cuda" and chosen != "cuda":
        raise RuntimeUnavailable("CUDA execution provider failed to initialise",
                                 hint="check the CUDA / cuDNN libraries onnxruntime-gpu needs")
    session.chosen_provider = chosen
    session.fallback_note = ("CUDA not available; running on CPU"
                             if provider == "auto" and chosen == "cpu" else None)
    return session


def _check_no_external_references(model: onnx.ModelProto) -> None:
    """An in-memory model whose weights live in an external data file cannot find that file
    (its location is relative to the model's folder): say to run the file by path."""
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise InputError(f"the model's weights are in the external data file '{where}', "
                             "which an in-memory model cannot locate",
                             hint="run the .onnx file by its path (its data file next to it)")


def _session_over_2gb(model: onnx.ModelProto, options: ort.SessionOptions,
                      providers: list[str]) -> ort.InferenceSession:
    """A session for an in-memory model too big to serialize (protobuf's 2 GiB limit): it
    is written with external data to a temporary folder and loaded from there (the folder
    is removed once the session holds the weights)."""
    with tempfile.TemporaryDirectory(prefix="attndsl-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_detached(detach_proto(model), path, external="always")
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def run_session(session: ort.InferenceSession,
                inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run with inputs by name; returns every output by name, in graph order.

    Missing, unknown or wrongly typed inputs raise InputError naming the input."""
    expected = {i.name: i for i in session.get_inputs()}
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise InputError(f"missing input(s): {', '.join(missing)}",
                         hint=f"the model takes {', '.join(expected)}")
    feed = {}
    for name, value in inputs.items():
        if name not in expected:
            raise InputError(f"unknown input '{name}'", hint=did_you_mean(name, expected)
                             or f"the model takes {', '.join(expected)}")
        arr = np.asarray(value)
        want = _NUMPY_TYPES.get(expected[name].type)
        if want is not None and arr.dtype != want:
            raise InputError(f"input '{name}' has dtype {arr.dtype}, the model wants "
                             f"{np.dtype(want).name}")
        feed[name] = arr
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, feed)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as err:
        raise InputError(f"ONNX Runtime rejected the inputs: {err}") from None
    except (ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.RuntimeException) as err:
        raise InputError(f"running the model failed: {err}",
                         hint="check that the inputs' shapes agree with each other") from None
    return dict(zip(names, values, strict=True))
