"""Looking at a spec from Python: ``check`` (what ``attndsl check`` reports, as data) and
``draw`` (what ``attndsl viz`` draws)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import AttnDSLError
from ._compile import SpecLike, model_of
from ._run import read_inputs

if TYPE_CHECKING:
    import numpy as np

    from ..summary import Summary

__all__ = ["check", "draw", "format_summary"]


def _count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        kind = "a positive" if least else "a non-negative"
        raise AttnDSLError(f"{name} must be {kind} integer, got {value!r}")
    return value


def check(spec_or_path: SpecLike, *, sizes: Mapping[str, int] | None = None,
          length: int | None = None, past_len: int = 0, tile_size: int = 64,
          seed: int = 0) -> Summary:
    """Check a spec and summarize it at concrete sizes, as ``attndsl check`` does: streams,
    parameter count, and per block the mask density, full/partial/empty tiles and FLOPs.

    Dynamic dims take their size from ``sizes`` (by name), or every one but ``batch`` from
    ``length``; otherwise 128, and batch 1. ``past_len``: cached positions for blocks with a
    cache. Masks that read inputs are evaluated on random example inputs of ``seed``.
    ``format_summary`` gives the text the command prints."""
    from ..summary import summarize

    model = model_of(spec_or_path)
    _count("past_len", past_len, 0)
    _count("tile_size", tile_size, 1)
    _count("seed", seed, 0)
    if length is not None:
        if sizes:
            raise AttnDSLError("give sizes or length, not both")
        _count("length", length, 1)
        sizes = {d.name: length for d in model.dims if d.size is None and d.name != "batch"}
    sizes = dict(sizes or {})
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes.values()):
        raise AttnDSLError(f"sizes must map dim names to ints, got {sizes!r}")
    return summarize(model, sizes, past_len=past_len, seed=seed, tile=tile_size)


def format_summary(summary: Summary) -> str:
    """The text ``attndsl check`` prints for ``summary``."""
    from .. import summary as text

    return text.format_summary(summary)


def draw(spec_or_path: SpecLike, block: str | None = None, *,
         heads: str | Sequence[int] | None = None, length: int | None = None,
         past_len: int = 0, tiles: int | None = None,
         inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
         out: str | os.PathLike[str] | None = None) -> str:
    """Draw a block's mask per head, as ``attndsl viz`` does: the Unicode picture, or with
    ``out`` a PNG (needs Pillow) and a one-line summary. ``block``: its name (default: the
    first); ``heads``: ``"0,2-3"`` or indices; ``length``: query length; ``tiles``: a tile
    size to classify tiles with (0: automatic). With ``inputs`` (arrays by graph input name,
    or an ``.npz`` file), the attention probabilities of that run instead."""
    from ..summary import graph_input_names
    from ..viz import draw as draw_model

    model = model_of(spec_or_path)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = read_inputs(inputs, graph_input_names(model))
    return draw_model(model, block, heads=heads, length=length, past_len=past_len, tiles=tiles,
                      inputs=inputs, out=out)
