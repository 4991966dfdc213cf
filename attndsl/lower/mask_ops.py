"""Mask expressions and score modifiers in standard ONNX ops.

A mask lowers to a bool tensor broadcastable to ``[batch, heads, q_len, k_len]`` (each
primitive only has the axes it depends on: ``causal`` is ``[Sq, Sk]``, ``heads(...)`` is
``[H, 1, 1]``, ``padding(len)`` is ``[B, 1, 1, Sk]``), or to a Python bool when it is constant.
Over the cells of a block-sparse piece (``PairPositions``) the pair axes ``[Sq, Sk]`` become
the piece's (``[tiles, rows, keys]`` for gathered tiles) and the same rules hold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import LoweringError
from ..ir.nodes import Block
from ..masks import nodes as mn
from ..masks.tables import alibi_slopes, random_blocks, random_chosen, t5_buckets
from .builder import FLOAT, INT64, GraphBuilder
from .positions import PairPositions, Positions

MaskValue = str | bool
AnyPositions = Positions | PairPositions


class MaskLowering:
    """Lowers the mask of one block; equal sub-expressions are built once."""

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
            self._memo[m] = self._lower(m)
        return self._memo[m]

    def _int64_input(self, name: str) -> str:
        if self.input_types[name] == "int64":
            return name
        return self.g.cast(name, INT64)

    def _lower(self, m: mn.Mask) -> MaskValue:
        g, p = self.g, self.pos
        if isinstance(m, mn.All):
            return True
        if isinstance(m, mn.Never):
            return False
        if isinstance(m, (mn.And, mn.Or)):
            return self._combine(m)
        if isinstance(m, mn.Not):
            inner = self.lower(m.term)
            return (not inner) if isinstance(inner, bool) else g.not_(inner)
        i64 = lambda v: g.scalar(v, "int64")  # noqa: E731
        if isinstance(m, mn.Causal):
            if p.cheap_offsets:
                return g.greater_equal(p.q_minus_k, i64(0))
            return g.less_equal(p.k, p.q_col)
        if isinstance(m, mn.Window):
            d = p.q_minus_k
            return g.and_(g.less_equal(d, i64(m.left)), g.greater_equal(d, i64(-m.right)))
        if isinstance(m, mn.Sliding):
            d = p.q_minus_k
            return g.and_(g.greater_equal(d, i64(0)), g.less(d, i64(m.size)))
        if isinstance(m, mn.Dilated):
            window = self.lower(mn.Window(m.left, m.right))
            return g.and_(window, self._divides(m.dilation))
        if isinstance(m, mn.Strided):
            return self._divides(m.stride)
        if isinstance(m, mn.Chunk):
            c = i64(m.size)
            return g.equal(g.div(p.q_col, c), g.div(p.k, c))
        if isinstance(m, mn.Summary):
            return g.greater_equal(g.op("Mod", p.k, i64(m.c)), i64(m.c - m.n))
        if isinstance(m, mn.Prefix):
            return g.less(p.k, i64(m.n))
        if isinstance(m, mn.Global):
            return g.or_(self._member(p.q_col, m.positions), self._member(p.k, m.positions))
        if isinstance(m, mn.Heads):
            table = np.isin(np.arange(self.block.heads), m.heads)
            return g.const(table.reshape(-1, *[1] * p.pair_rank), bool)
        if isinstance(m, mn.Random):
            q_len, k_len = self.static_lens
            if q_len is None or k_len is None:
                raise LoweringError(f"block '{self.block.name}': random(...) needs static query "
                                    "and key lengths", m.span)
            if p.whole:
                return g.const(random_blocks(m.r, m.block, m.seed, q_len, k_len), bool)
            return self._random_lookup(m, q_len, k_len)
        if isinstance(m, mn.Padding):
            lens = g.reshape(self._int64_input(m.input), [-1, *[1] * (p.pair_rank + 1)])
            return g.less(p.k, lens)
        if isinstance(m, mn.Document):  # ids [B, k_len] at the query and key positions
            ids = self._int64_input(m.input)
            ids_q = g.unsqueeze(g.gather(ids, p.index(p.q_col), axis=1), [1])  # [B, 1, Sq, 1]
            ids_k = g.unsqueeze(g.gather(ids, p.index(p.k_row), axis=1), [1])  # [B, 1, 1, Sk]
            return g.equal(ids_q, ids_k)
        if isinstance(m, mn.MaskInput):
            return m.input
        raise LoweringError(f"cannot lower mask node {type(m).__name__}")

    def _combine(self, m: mn.And | mn.Or) -> MaskValue:
        is_and = isinstance(m, mn.And)
        parts: list[str] = []
        for term in m.terms:
            v = self.lower(term)
            if isinstance(v, bool):
                if v != is_and:  # False in an And, True in an Or decides
                    return v
                continue
            if v not in parts:
                parts.append(v)
        if not parts:
            return is_and
        out = parts[0]
        for v in parts[1:]:
            out = self.g.and_(out, v) if is_and else self.g.or_(out, v)
        return out

    def _divides(self, n: int) -> str:
        g = self.g
        return g.equal(g.op("Mod", self.pos.q_minus_k, g.scalar(n, "int64")), g.scalar(0, "int64"))

    def _member(self, x: str, positions: tuple[int, ...]) -> str:
        """``x`` is one of ``positions`` (a bool lookup table; x >= 0, or masked elsewhere)."""
        g = self.g
        top = max(positions)
        table = np.zeros(top + 1, dtype=bool)
        table[list(positions)] = True
        idx = g.op("Clip", x, g.scalar(0, "int64"), g.scalar(top, "int64"))
        return g.and_(g.less_equal(x, g.scalar(top, "int64")), g.gather(g.const(table, bool), idx))

    def _random_lookup(self, m: mn.Random, q_len: int, k_len: int) -> str:
        """random(...) at the positions of a piece: its block table [nq, nk] read at
        (query row // block, key // block), flattened to one Gather."""
        g, p = self.g, self.pos
        chosen = random_chosen(m.r, m.block, m.seed, q_len, k_len)
        nk = -(-k_len // m.block)
        table = np.zeros((len(chosen), nk), dtype=bool)
        for qb, ks in enumerate(chosen):
            table[qb, ks] = True
        i64 = lambda v: g.scalar(v, "int64")  # noqa: E731
        row = g.op("Clip", g.sub(p.q_col, p.q_first), i64(0), i64(q_len - 1))
        key = g.op("Clip", p.k, i64(0), i64(k_len - 1))
        idx = g.add(g.mul(g.div(row, i64(m.block)), i64(nk)), g.div(key, i64(m.block)))
        return g.gather(g.const(table.reshape(-1), bool), idx)


def row_witnesses(m: mn.Mask, diagonal: bool) -> frozenset[str]:
    """Keys every query row is sure to keep under ``m``: "zero" (key 0) and "diag" (k = q,
    only claimed when ``diagonal``: self-attention over one stream, where q < k_len). An
    empty set means some row may be fully masked and needs the guard."""
    both = frozenset({"zero", "diag"} if diagonal else {"zero"})
    diag = frozenset({"diag"} if diagonal else ())
    if isinstance(m, mn.All):
        return both
    if isinstance(m, mn.Causal):
        return both
    if isinstance(m, (mn.Window, mn.Sliding, mn.Dilated, mn.Strided, mn.Chunk, mn.Document)):
        return diag
    if isinstance(m, mn.Prefix):
        return frozenset({"zero"}) if m.n >= 1 else frozenset()
    if isinstance(m, mn.And):
        out = both
        for t in m.terms:
            out &= row_witnesses(t, diagonal)
        return out
    if isinstance(m, mn.Or):
        out = frozenset()
        for t in m.terms:
            out |= row_witnesses(t, diagonal)
        return out
    return frozenset()


def lower_scores(g: GraphBuilder, block: Block, pos: AnyPositions, s: str,
                 float32: Callable[[str], str]) -> str:
    """Apply the block's score modifiers, in order, to the float32 logits ``s``.

    ``float32(name)`` gives a graph input or weight as float32."""
    for mod in block.score:
        if isinstance(mod, mn.Alibi):
            slopes = alibi_slopes(block.heads).reshape(-1, *[1] * pos.pair_rank)
            slopes = g.const(slopes, np.float32)
            dist = g.cast(g.op("Abs", pos.q_minus_k), FLOAT)
            s = g.sub(s, g.mul(slopes, dist))
        elif isinstance(mod, mn.Softcap):
            cap = g.scalar(mod.cap, np.float32)
            s = g.mul(g.op("Tanh", g.div(s, cap)), cap)
        elif isinstance(mod, mn.RelativeBias):
            s = g.add(s, _relative_bias(g, block, pos, mod, float32))
        elif isinstance(mod, mn.BiasInput):
            s = g.add(s, float32(mod.input))
        else:
            raise LoweringError(f"cannot lower score modifier {type(mod).__name__}")
    return s


def _relative_bias(g: GraphBuilder, block: Block, pos: AnyPositions, mod: mn.RelativeBias,
                   float32: Callable[[str], str]) -> str:
    """``table[bucket(k - q), h]`` as [H, Sq, Sk] (the head axis before the pair axes).
    Buckets come from a lookup table over relative positions -R..R; beyond R (past
    max_distance) T5's bucket is constant."""
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
    weight = float32(f"{block.name}.relative_bias.weight")  # [buckets, H]
    r = pos.pair_rank
    return g.transpose(g.gather(weight, bucket), [r, *range(r)])  # [H, Sq, Sk]
