"""Model parameters: loaded from .npz / .safetensors (checked against the IR) or drawn
from the spec's seed (same spec and seed, same bytes). Safetensors files are read by
``safetensors_io`` (no torch, no ``safetensors`` package): F32, F16 and BF16 checkpoints load,
converted to the model's dtype (float32, exactly; or float16, so a float16 model never holds a
float32 copy of its weights); integer and quantized tensors are refused by name."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .arrays import as_dtype
from .errors import WeightsError
from .features.registry import block_feature_of
from .ir.nodes import Model
from .safetensors_io import (
    SUPPORTED_DTYPES,
    UNSUPPORTED_HINT,
    Conversion,
    iter_tensors,
    open_safetensors,
    unsupported_dtype_problem,
)

Weights = dict[str, np.ndarray]


class LoadedWeights(dict[str, np.ndarray]):
    """Arrays by name, with the type conversions made reading them (``conversions``), so
    the compiler can record them in the model's metadata (``describe_conversions``)."""

    conversions: tuple[Conversion, ...] = ()


def describe_conversions(conversions: Sequence[Conversion]) -> str:
    """One line per kind of conversion, e.g. ``BF16 -> float16: 96 tensors, rounded to
    nearest even`` (and how many values overflowed to inf, if any); empty for none."""
    groups: dict[tuple[str, str, bool], list[Conversion]] = {}
    for c in conversions:
        groups.setdefault((c.source, c.target, c.exact), []).append(c)
    lines = []
    for (source, target, exact), cs in sorted(groups.items()):
        n = len(cs)
        line = (f"{source} -> {target}: {n} tensor{'s' if n != 1 else ''}, "
                + ("exact" if exact else "rounded to nearest even"))
        overflow = sum(c.overflow for c in cs)
        if overflow:
            line += f", {overflow} values overflowed to inf"
        lines.append(line)
    return "\n".join(lines)


def weights_dtype(model: Model) -> str:
    """The dtype parameters are held in before the lowering: float16 for a float16 model
    (no float32 copy of a float16 checkpoint), else float32."""
    return "float16" if model.dtype == "float16" else "float32"


def seeded_weights(model: Model) -> Weights:
    """Deterministic parameters. Each array is drawn from its own generator, seeded by the
    spec seed and the array name, so adding a block does not change the others. Linear
    weights and biases follow PyTorch's default range U(-1/sqrt(in), 1/sqrt(in)); a block
    feature's weights its own ``init`` rule, when it has one."""
    out: Weights = {}
    inits = {name: feature.init for b in model.blocks for f in b.features
             if (feature := block_feature_of(f)).init is not None
             for name in feature.weights(f, b)}  # block features that seed their own
    for name, shape in sorted(model.weight_shapes().items()):
        rng = np.random.default_rng([model.seed, zlib.crc32(name.encode())])
        if name in inits:
            arr = np.asarray(inits[name](name, shape, rng))
        elif name.endswith("relative_bias.weight"):
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
    """Every array of a ``.npz`` or ``.safetensors`` file. Safetensors tensors keep their
    float type (BF16 becomes float32, exactly); integer and quantized ones are refused."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"cannot read weights file '{p}': no such file")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                return {k: np.asarray(f[k]) for k in f.files}
        if p.suffix == ".safetensors":
            with open_safetensors(p) as st:
                return dict(iter_tensors(st))
    except WeightsError:
        raise
    except Exception as err:  # corrupt archives raise many kinds of errors
        raise WeightsError(f"cannot read weights file '{p}': {err}") from None
    raise WeightsError(f"unsupported weights file '{p}'", hint="use .npz or .safetensors")


def _problems(expected: Mapping[str, tuple[int, ...]],
              found: Mapping[str, tuple[tuple[int, ...], str | None]]) -> list[str]:
    """What keeps ``found`` (name -> shape, and a dtype problem or None) from matching."""
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"missing array '{name}' {list(shape)}")
        elif tuple(found[name][0]) != shape:
            problems.append(f"array '{name}' has shape {list(found[name][0])}, "
                            f"expected {list(shape)}")
        elif found[name][1] is not None:
            problems.append(found[name][1])
    return problems + [f"unexpected array '{name}'" for name in found if name not in expected]


def _mismatch(origin: str, problems: list[str]) -> WeightsError:
    quantized = any("quantized" in p for p in problems)
    return WeightsError(f"weights file '{origin}' does not match the spec: "
                        + "; ".join(problems), hint=UNSUPPORTED_HINT if quantized else None)


def check_weights(model: Model, weights: Weights, origin: str) -> Weights:
    """Every expected array present with its shape, nothing extra; cast to float32, except
    that a float16 model keeps float16 arrays as they are (no copy)."""
    expected = model.weight_shapes()
    problems = _problems(expected, {
        name: (a.shape, None if np.issubdtype(a.dtype, np.floating)
               else f"array '{name}' has dtype {a.dtype}, expected a float")
        for name, a in weights.items()})
    if problems:
        raise _mismatch(origin, problems)
    keep16 = model.dtype == "float16"
    return {name: as_dtype(weights[name], np.float16 if keep16 and weights[name].dtype
                           == np.float16 else np.float32) for name in expected}


def _load_safetensors(model: Model, p: Path, origin: str) -> tuple[Weights, list[Conversion]]:
    """Check names, shapes and dtypes from the header, then read each expected tensor once,
    straight into ``weights_dtype(model)``: float32 (exact from F16 and BF16; the lowering
    rounds to the model dtype), or float16 for a float16 model (F16 read as is, F32 and BF16
    rounded to nearest even in chunks)."""
    expected = model.weight_shapes()
    try:
        with open_safetensors(p) as st:
            problems = _problems(expected, {
                name: (i.shape, None if i.dtype in SUPPORTED_DTYPES
                       else unsupported_dtype_problem(name, i.dtype, noun="array"))
                for name, i in ((n, st.info(n)) for n in st.names())})
            if problems:
                raise _mismatch(origin, problems)
            target = weights_dtype(model)
            out = {name: st.read(name, target) for name in expected}
            return out, list(st.conversions)
    except WeightsError:
        raise
    except Exception as err:  # an unreadable file (permissions, a folder...)
        raise WeightsError(f"cannot read weights file '{p}': {err}") from None


def load_weights_with_conversions(model: Model, path: str | Path | None = None,
                                  ) -> tuple[Weights, list[Conversion]]:
    """``load_weights`` and the type conversions it made (e.g. BF16 -> float32), for the
    compiled model's record. Seeded and ``.npz`` weights report none."""
    path = path if path is not None else model.weights_file
    if path is None:
        return seeded_weights(model), []
    p = Path(path)
    if p.suffix == ".safetensors" and p.exists():
        return _load_safetensors(model, p, str(path))
    return check_weights(model, read_weights_file(path), str(path)), []


def load_weights(model: Model, path: str | Path | None = None) -> LoadedWeights:
    """The model's parameters: from ``path`` (or the spec's ``weights``), else seeded; the
    conversions made reading them ride along (``LoadedWeights.conversions``)."""
    arrays, conversions = load_weights_with_conversions(model, path)
    out = LoadedWeights(arrays)
    out.conversions = tuple(conversions)
    return out
