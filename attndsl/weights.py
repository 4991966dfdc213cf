"""Model parameters: loaded from .npz / .safetensors (checked against the IR) or drawn
from the spec's seed (same spec and seed, same bytes)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .errors import WeightsError
from .ir.nodes import Model

Weights = dict[str, np.ndarray]


def seeded_weights(model: Model) -> Weights:
    """Deterministic parameters. Each array is drawn from its own generator, seeded by the
    spec seed and the array name, so adding a block does not change the others. Linear
    weights and biases follow PyTorch's default range U(-1/sqrt(in), 1/sqrt(in))."""
    out: Weights = {}
    for name, shape in sorted(model.weight_shapes().items()):
        rng = np.random.default_rng([model.seed, zlib.crc32(name.encode())])
        if name.endswith("relative_bias.weight"):
            arr = rng.normal(0.0, 0.5, size=shape)
        else:
            fan_in = shape[-1] if name.endswith(".weight") else _fan_in(model, name)
            bound = 1.0 / np.sqrt(fan_in)
            arr = rng.uniform(-bound, bound, size=shape)
        out[name] = arr.astype(np.float32)
    return out


def _fan_in(model: Model, bias_name: str) -> int:
    return model.weight_shapes()[bias_name.removesuffix(".bias") + ".weight"][-1]


def read_weights_file(path: str | Path) -> Weights:
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"cannot read weights file '{p}': no such file")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                return {k: np.asarray(f[k]) for k in f.files}
        if p.suffix == ".safetensors":
            return _read_safetensors(p)
    except WeightsError:
        raise
    except Exception as err:  # corrupt archives raise many kinds of errors
        raise WeightsError(f"cannot read weights file '{p}': {err}") from None
    raise WeightsError(f"unsupported weights file '{p}'", hint="use .npz or .safetensors")


def _read_safetensors(p: Path) -> Weights:
    """Read safetensors with the library when installed, else with the (simple) format."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return _read_safetensors_plain(p)
    return {k: np.asarray(v) for k, v in load_file(str(p)).items()}


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}


def _read_safetensors_plain(p: Path) -> Weights:
    import json
    import struct

    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out: Weights = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise WeightsError(f"array '{name}' has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(info["shape"])
    return out


def check_weights(model: Model, weights: Weights, origin: str) -> Weights:
    """Every expected array present with its shape, nothing extra; cast to float32."""
    expected = model.weight_shapes()
    problems = []
    for name, shape in expected.items():
        if name not in weights:
            problems.append(f"missing array '{name}' {list(shape)}")
        elif tuple(weights[name].shape) != shape:
            problems.append(f"array '{name}' has shape {list(weights[name].shape)}, "
                            f"expected {list(shape)}")
        elif not np.issubdtype(weights[name].dtype, np.floating):
            problems.append(f"array '{name}' has dtype {weights[name].dtype}, expected a float")
    problems += [f"unexpected array '{name}'" for name in weights if name not in expected]
    if problems:
        raise WeightsError(f"weights file '{origin}' does not match the spec: "
                           + "; ".join(problems))
    return {name: np.asarray(weights[name], dtype=np.float32) for name in expected}


def load_weights(model: Model, path: str | Path | None = None) -> Weights:
    """The model's parameters: from ``path`` (or the spec's ``weights``), else seeded."""
    path = path if path is not None else model.weights_file
    if path is None:
        return seeded_weights(model)
    return check_weights(model, read_weights_file(path), str(path))
