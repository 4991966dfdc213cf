"""Mask expressions and score modifiers in standard ONNX ops.

A mask lowers to a bool tensor broadcastable to ``[batch, heads, q_len, k_len]`` (each
primitive only has the axes it depends on: ``causal`` is ``[Sq, Sk]``, ``heads(...)`` is
``[H, 1, 1]``, ``padding(len)`` is ``[B, 1, 1, Sk]``), or to a Python bool when it is constant.
Over the cells of a block-sparse piece (``PairPositions``) the pair axes ``[Sq, Sk]`` become
the piece's (``[tiles, rows, keys]`` for gathered tiles) and the same rules hold.

The rules themselves are the features' ``lower`` and ``witnesses`` stages
(``features/masks``, ``features/scores``); this module holds their contexts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..features import nodes as mn
from ..features.registry import rule
from ..ir.nodes import Block
from .builder import BOOL, FLOAT, INT64, GraphBuilder
from .positions import PairPositions, Positions

MaskValue = str | bool
AnyPositions = Positions | PairPositions


class MaskLowering:
    """Lowers the mask of one block; equal sub-expressions are built once.

    This object is the context every mask feature's ``lower`` rule receives: the graph
    builder ``g``, the positions ``pos``, the ``block``, ``static_lens`` (query and key
    lengths, None when dynamic), ``lower(sub)`` and ``int64_input(name)``."""

    def __init__(self, g: GraphBuilder, block: Block, pos: AnyPositions,
                 input_types: dict[str, str],
                 static_lens: tuple[int | None, int | None]):
        self.g = g
        self.block = block
        self.pos = pos
        self.input_types = input_types
        self.static_lens = static_lens
        self._memo: dict[mn.Mask, MaskValue] = {}

    def lower(self, m: mn.Mask) -> MaskValue:
        if m not in self._memo:
            self._memo[m] = rule("lower", m)(m, self)
        return self._memo[m]

    def int64_input(self, name: str) -> str:
        """A graph input as int64 (cast when it is int32)."""
        if self.input_types[name] == "int64":
            return name
        return self.g.cast(name, INT64)


def row_witnesses(m: mn.Mask, diagonal: bool) -> frozenset[str]:
    """Keys every query row is sure to keep under ``m``: "zero" (key 0) and "diag" (k = q,
    only claimed when ``diagonal``: self-attention over one stream, where q < k_len). An
    empty set means some row may be fully masked and needs the guard."""
    return rule("witnesses", m)(m, diagonal, row_witnesses)


def zero_empty_rows(g: GraphBuilder, allowed: str, x: str, *, empty_safe: bool = False) -> str:
    """``x`` [..., rows, N] with every row whose ``allowed`` cells are all False set to 0.

    The one fully-masked-row guard of every lowering (docs/runtimes.md): Softmax over a row of
    -inf gives NaN, and runtimes disagree on ReduceMax of -inf rows, so the test is built from
    the boolean mask, not from the logits. ``empty_safe`` keeps the reduced axis at 1 on a
    Slice for pieces that may have no rows (block-sparse chunks): ORT <= 1.30
    (onnxruntime-node/web) reduces an empty tensor to the input's shape."""
    row_ok = g.reduce("ReduceMax", g.cast(allowed, FLOAT), [-1])
    if empty_safe:
        row_ok = g.slice(row_ok, [0], [1], [-1])
    return g.where(g.cast(row_ok, BOOL), x, g.scalar(0.0, np.float32))


class ScoreLowering:
    """The context every score feature's ``lower`` rule receives: ``g``, ``block``, ``pos``,
    ``float32(name)`` (a graph input or weight as float32) and ``to_float(x)``."""

    def __init__(self, g: GraphBuilder, block: Block, pos: AnyPositions,
                 float32: Callable[[str], str]):
        self.g = g
        self.block = block
        self.pos = pos
        self.float32 = float32

    def to_float(self, x: str) -> str:
        """``x`` cast to float32."""
        return self.g.cast(x, FLOAT)


def lower_scores(g: GraphBuilder, block: Block, pos: AnyPositions, s: str,
                 float32: Callable[[str], str]) -> str:
    """Apply the block's score modifiers, in order, to the float32 logits ``s``.

    ``float32(name)`` gives a graph input or weight as float32."""
    ctx = ScoreLowering(g, block, pos, float32)
    for mod in block.score:
        s = rule("lower", mod)(mod, ctx, s)
    return s
