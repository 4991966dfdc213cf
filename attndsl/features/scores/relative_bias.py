"""``relative_bias(buckets=32, max_distance=128, bidirectional=true)``: T5's learned bias
``s += table[bucket(k - q), h]``; the table is the weight ``<block>.relative_bias.weight``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import LoweringError
from ...source import Span
from ..base import Feature, Param, Score, constant, format_value, span_field


@dataclass(frozen=True, slots=True)
class RelativeBias(Score):
    buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    span: Span | None = span_field()


def t5_buckets(relative: np.ndarray, buckets: int, max_distance: int,
               bidirectional: bool) -> np.ndarray:
    """T5's bucket of ``relative = k - q`` (as Hugging Face ``T5Attention``; the log branch
    is computed in float32 like the original)."""
    rel = np.asarray(relative, dtype=np.int64)
    out = np.zeros_like(rel)
    nb = buckets
    if bidirectional:
        nb //= 2
        out += (rel > 0).astype(np.int64) * nb
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    exact = nb // 2
    small = rel < exact
    with np.errstate(divide="ignore"):
        ratio = np.log(np.maximum(rel, 1).astype(np.float32) / np.float32(exact))
        large = exact + (ratio / np.float32(math.log(max_distance / exact))
                         * np.float32(nb - exact)).astype(np.int64)
    large = np.minimum(large, nb - 1)
    return out + np.where(small, rel, large)


def weight_name(block_name: str) -> str:
    return f"{block_name}.relative_bias.weight"


def _eval(mod: RelativeBias, ev, s, allowed):
    buckets = t5_buckets(ev.rel, mod.buckets, mod.max_distance, mod.bidirectional)
    table = ev.weight(weight_name(ev.block.name))  # [buckets, H]
    return s + table[buckets].transpose(2, 0, 1)[None], allowed


def _bias(mod: RelativeBias, ctx) -> str:
    """``table[bucket(k - q), h]`` as [H, Sq, Sk] (the head axis before the pair axes).
    Buckets come from a lookup table over relative positions -R..R; beyond R (past
    max_distance) T5's bucket is constant."""
    g, pos, block = ctx.g, ctx.pos, ctx.block
    reach = max(mod.max_distance, mod.buckets) + 1
    rel = np.arange(-reach, reach + 1)
    lut = t5_buckets(rel, mod.buckets, mod.max_distance, mod.bidirectional)
    far = t5_buckets(np.array([-reach, reach, -(1 << 40), 1 << 40]), mod.buckets,
                     mod.max_distance, mod.bidirectional)
    if lut.min() < 0 or lut.max() >= mod.buckets or far[0] != far[2] or far[1] != far[3]:
        raise LoweringError(
            f"block '{block.name}': relative_bias(buckets={mod.buckets}, "
            f"max_distance={mod.max_distance}) gives buckets outside 0..{mod.buckets - 1}",
            mod.span, "max_distance must exceed the exact range (buckets / 2, or buckets / 4 "
            "when bidirectional)")
    idx = g.add(g.op("Clip", pos.k_minus_q, g.scalar(-reach, "int64"), g.scalar(reach, "int64")),
                g.scalar(reach, "int64"))
    bucket = g.gather(g.const(lut, np.int64), idx)  # [Sq, Sk]
    weight = ctx.float32(weight_name(block.name))  # [buckets, H]
    r = pos.pair_rank
    return g.transpose(g.gather(weight, bucket), [r, *range(r)])  # [H, Sq, Sk]


def _check(mod: RelativeBias, ctx) -> None:
    exact = (mod.buckets // 2 if mod.bidirectional else mod.buckets) // 2
    if exact < 1 or mod.max_distance <= exact:
        ctx.err("relative_bias needs at least 4 buckets (2 one-directional) and "
                f"max_distance > {max(exact, 1)}", mod.span)


FEATURE = Feature(
    name="relative_bias", kind="score", node=RelativeBias,
    params=(Param("buckets", "int", 32, minimum=1), Param("max_distance", "int", 128, minimum=1),
            Param("bidirectional", "bool", True)), doc="s += table[bucket(k - q), h]",
    check=_check,
    format=lambda mod: (f"relative_bias(buckets={mod.buckets}, max_distance={mod.max_distance}, "
                        f"bidirectional={format_value(mod.bidirectional)})"),
    eval=_eval,
    lower=lambda mod, ctx, s: ctx.g.add(s, _bias(mod, ctx)),
    ort=constant(("add", "relative_bias")),
    inputs=constant(()),
    weights=lambda mod, block: {weight_name(block.name): (mod.buckets, block.heads)},
)
