"""Example inputs for a model: random but valid (lengths in range, sorted document ids,
bool masks that leave most cells open), deterministic for a seed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .features import nodes as mn
from .features.registry import cache_inputs
from .ir.nodes import Model

DEFAULT_DYNAMIC = {"batch": 2}
DEFAULT_SIZE = 7


def resolve_sizes(model: Model, sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """A size for every dim: fixed dims keep theirs, dynamic ones come from ``sizes``
    (else 2 for a dim named batch, 7 otherwise)."""
    sizes = dict(sizes or {})
    out = {}
    for d in model.dims:
        if d.size is not None:
            out[d.name] = d.size
        else:
            out[d.name] = int(sizes.get(d.name, DEFAULT_DYNAMIC.get(d.name, DEFAULT_SIZE)))
    return out


def _key_len(model: Model, input_name: str, shapes: dict[str, tuple[int, ...]],
             past_len: int) -> int | None:
    """Total key length of the first block whose mask reads ``input_name``."""
    for b in model.blocks:
        if input_name in mn.input_names(b.mask):
            k = _stream_len(model, b.key, shapes)
            return k + (past_len if b.cache else 0)
    return None


def _stream_len(model: Model, stream: str, shapes) -> int:
    if stream in shapes:
        return shapes[stream][1]
    return _stream_len(model, model.block(stream).query, shapes)


def random_inputs(model: Model, sizes: Mapping[str, int] | None = None, seed: int = 0,
                  past_len: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every graph input (cache inputs too, with ``past_len`` past positions)."""
    rng = np.random.default_rng(seed)
    dims = resolve_sizes(model, sizes)
    shapes = {i.name: tuple(dims[s] if isinstance(s, str) else s for s in i.shape)
              for i in model.inputs}
    out: dict[str, np.ndarray] = {}
    for i in model.inputs:
        shape = shapes[i.name]
        if i.dtype.startswith("float"):
            out[i.name] = rng.standard_normal(shape).astype(i.dtype)
        elif i.dtype == "bool":
            out[i.name] = rng.random(shape) < 0.75
        elif len(shape) == 1:  # lengths
            k = _key_len(model, i.name, shapes, past_len) or max(dims.values())
            out[i.name] = rng.integers(1, k + 1, size=shape).astype(i.dtype)
        else:  # document ids: non-decreasing segment ids
            starts = rng.random(shape) < 0.3
            out[i.name] = np.cumsum(starts, axis=-1).astype(i.dtype)
    for b in model.blocks:
        if b.cache:
            batch = shapes[model.root_stream(b.query)][0]
            for name, shape in cache_inputs(b, batch, past_len).items():
                # a static cache: random buffers (the slots from the write position on are
                # overwritten or masked) and the write position past_len
                out[name] = (np.array(past_len, np.int64) if shape == ()
                             else rng.standard_normal(shape).astype(model.dtype))
    return out

