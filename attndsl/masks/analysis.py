"""Mask analysis at given lengths: tile classification (for block-sparse lowering) and density.

``classify_tiles`` cuts the ``[q_len, k_len]`` score matrix into tiles and says, per head, which
are FULL (every cell allowed), EMPTY (none) or PARTIAL. It evaluates no cells of
position-only patterns: a sub-expression that depends on the offset ``k - q`` alone (causal,
window, sliding, dilated, strided and their & | ~) is read exactly from a 1-D table over the
offsets a tile spans (every offset of the interval ``[k0 - q1, k1 - q0]`` occurs in a tile), one
that depends on ``k`` alone (prefix, summary) from a 1-D table over keys, chunk and global from
closed forms on the tile's ranges, heads(...) per head. Those classes combine in three-valued
logic (``&`` = min, ``|`` = max, ``~`` swaps FULL and EMPTY), which is exact except where
two PARTIAL terms meet; it then says PARTIAL, the safe answer. FULL and EMPTY are never wrong.
``random`` terms read their exact cell table (their lengths are static); padding / document /
mask(m) are PARTIAL unless the rest of the expression decides the tile.

What a node depends on, its exact tile classes and its head set are its feature's ``tiles``
record (``features.base.Tiles``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from ..features import nodes as n
from ..features.base import Tiles
from ..features.registry import rule
from .algebra import simplify
from .eval import eval_mask


def _tiles(m: n.Mask) -> Tiles:
    return rule("tiles", m)


def _head_set(m: n.Mask) -> tuple[int, ...] | None:
    """The heads a node allows when it depends on the head alone (heads(...)), else None."""
    f = _tiles(m).heads
    return None if f is None else f(m)


def _reads(m: n.Mask) -> tuple[tuple[str, str], ...]:
    return rule("inputs", m)(m)


class Tile(IntEnum):
    EMPTY = 0
    PARTIAL = 1
    FULL = 2


def is_symbolic(mask: n.Mask) -> bool:
    """True for position-only masks (no random(...), no inputs): their classification is
    exact for FULL and EMPTY and each tile's class depends only on the tile's absolute query
    and key ranges and the head, so it holds for any lengths (tiles cut at the end aside)."""
    return not any(_support(m) in ("r", "i") for m in n.walk(mask))


def classify_tiles(mask: n.Mask, heads: int, q_len: int, k_len: int, tile: int | tuple[int, int],
                   past_len: int = 0, self_attention: bool = True) -> np.ndarray:
    """``Tile`` values (int8) of shape ``[heads or 1, ceil(q_len / tq), ceil(k_len / tk)]``.

    The head axis is 1 when the mask does not depend on the head. Query row i has position
    ``past_len + i`` in self-attention, ``i`` otherwise; ``tile`` is ``t`` or ``(tq, tk)``."""
    grid = _Grid(q_len, k_len, tile, past_len if self_attention else 0)
    mask = simplify(mask, heads)
    head_nodes = sorted({m for m in n.walk(mask) if _head_set(m) is not None}, key=repr)
    if not head_nodes:
        return grid.classify(mask)[None]
    by_pattern: dict[tuple[bool, ...], np.ndarray] = {}
    out = []
    for h in range(heads):
        pattern = tuple(h in _head_set(node) for node in head_nodes)
        if pattern not in by_pattern:
            fixed = simplify(_at_head(mask, dict(zip(head_nodes, pattern, strict=True))))
            by_pattern[pattern] = grid.classify(fixed)
        out.append(by_pattern[pattern])
    return np.stack(out)


def tile_counts(mask: n.Mask, heads: int, q_len: int, k_len: int, tile: int | tuple[int, int],
                past_len: int = 0, self_attention: bool = True) -> dict[str, int]:
    """Numbers of FULL, PARTIAL and EMPTY (head, tile) pairs, over all ``heads`` heads."""
    cls = classify_tiles(mask, heads, q_len, k_len, tile, past_len, self_attention)
    scale = heads // cls.shape[0]
    return {t.name.lower(): int((cls == t).sum()) * scale
            for t in (Tile.FULL, Tile.PARTIAL, Tile.EMPTY)}


def density(mask: n.Mask, heads: int, q_len: int, k_len: int, past_len: int = 0,
            self_attention: bool = True, inputs: Mapping[str, np.ndarray] | None = None,
            tile: int = 128) -> float | None:
    """Exact fraction of allowed cells over ``[batch, heads, q_len, k_len]``.

    None when the mask reads inputs that ``inputs`` does not supply (the batch size comes
    from them). Only the cells of PARTIAL tiles are evaluated, so long sequences with
    structured masks stay cheap."""
    mask = simplify(mask, heads)
    inputs = dict(inputs or {})
    if any(name not in inputs for name in n.input_names(mask)):
        return None
    if q_len <= 0 or k_len <= 0:
        raise ValueError("density needs positive lengths")
    batch = max([_batch_of(name, role, inputs) for m in n.walk(mask) for name, role in _reads(m)],
                default=1)
    cls = classify_tiles(mask, heads, q_len, k_len, tile, past_len, self_attention)
    cls = np.broadcast_to(cls, (heads, *cls.shape[1:]))
    q_off = past_len if self_attention else 0
    mask, inputs = _bind_random(mask, heads, q_len, k_len, q_off, inputs)
    starts = np.arange(cls.shape[2]) * tile
    widths = np.minimum(starts + tile, k_len) - starts
    total = 0
    for i in range(cls.shape[1]):
        r0, r1 = i * tile, min((i + 1) * tile, q_len)
        total += batch * (r1 - r0) * int(((cls[:, i] == Tile.FULL) * widths).sum())
        for j0, j1 in _runs(np.any(cls[:, i] == Tile.PARTIAL, axis=0)):
            c0, c1 = j0 * tile, min(j1 * tile, k_len)
            cells = eval_mask(mask, heads, np.arange(r0, r1) + q_off, np.arange(c0, c1), batch,
                              _slice_inputs(mask, inputs, r0, r1, c0, c1))
            cols = np.broadcast_to(cells, (batch, heads, r1 - r0, c1 - c0)).sum(axis=(0, 2))
            per_tile = np.add.reduceat(cols, np.arange(0, c1 - c0, tile), axis=1)
            total += int((per_tile * (cls[:, i, j0:j1] == Tile.PARTIAL)).sum())
    return total / (batch * heads * q_len * k_len)


# ---------------------------------------------------------------- classification


def _support(m: n.Mask) -> str:
    """'c' constant, 'd' offset k - q only, 'k' key only, 'r' random(...) only, 'p' other
    position-only, 'i' reads inputs (combinators: from their terms)."""
    return _tiles(m).support(m, _support)


class _Grid:
    """Tile ranges (inclusive positions) and the classifiers of each kind of term."""

    def __init__(self, q_len: int, k_len: int, tile: int | tuple[int, int], q_off: int):
        tq, tk = (tile, tile) if isinstance(tile, int) else tile
        if tq <= 0 or tk <= 0:
            raise ValueError(f"tile sizes must be positive, got {tile}")
        self.q_len, self.k_len, self.tq, self.tk, self.q_off = q_len, k_len, tq, tk, q_off
        starts_q, starts_k = np.arange(0, q_len, tq), np.arange(0, k_len, tk)
        self.qa = (starts_q + q_off)[:, None]
        self.qb = (np.minimum(starts_q + tq, q_len) - 1 + q_off)[:, None]
        self.ka = starts_k[None, :]
        self.kb = (np.minimum(starts_k + tk, k_len) - 1)[None, :]
        self.shape = (len(starts_q), len(starts_k))

    def const(self, t: Tile) -> np.ndarray:
        return np.full(self.shape, t, dtype=np.int8)

    def classify(self, m: n.Mask) -> np.ndarray:
        if 0 in self.shape:
            return self.const(Tile.EMPTY)
        s = _support(m)
        if s == "c":
            return self.const(Tile.FULL if simplify(m) == n.All() else Tile.EMPTY)
        if s in ("d", "k"):
            return self._line(m, s)
        if s == "r":  # static: exact from the cell table
            cells = eval_mask(m, 1, np.arange(self.q_len) + self.q_off, np.arange(self.k_len))
            return self._reduce(np.broadcast_to(cells, (1, 1, self.q_len, self.k_len))[0, 0])
        f = _tiles(m).classify  # combinators, chunk, global
        if f is not None:
            return f(m, self)
        return self.const(Tile.PARTIAL)  # padding / document / mask(m); heads were fixed

    def negate(self, classes: np.ndarray) -> np.ndarray:
        """The classes of ``~x`` from those of ``x``: FULL and EMPTY swap."""
        return (Tile.FULL - classes).astype(np.int8)

    def pick(self, full: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """FULL where ``full``, else EMPTY where ``empty``, else PARTIAL."""
        return _pick(full, empty)

    def combine(self, m: n.And | n.Or, is_and: bool) -> np.ndarray:
        """Three-valued logic between groups that are classified exactly: the offset-only
        terms together, the key-only ones, the random ones; with inputs, all position terms."""
        kinds = [_support(t) for t in m.terms]
        position = [t for t, s in zip(m.terms, kinds, strict=True) if s != "i"]
        parts = [self.classify(t) for t, s in zip(m.terms, kinds, strict=True) if s == "i"]
        if parts and len(position) > 1:
            parts.append(self.classify(type(m)(tuple(position))))
        else:
            groups: dict[object, list[n.Mask]] = {}
            for i, t in enumerate(position):
                kind = _support(t)
                groups.setdefault(kind if kind in ("d", "k", "r") else i, []).append(t)
            parts += [self.classify(type(m)(tuple(g)) if len(g) > 1 else g[0])
                      for g in groups.values()]
        reduce = np.minimum if is_and else np.maximum
        return reduce.reduce(parts).astype(np.int8)

    def _line(self, m: n.Mask, axis: str) -> np.ndarray:
        """Exact classes of an offset-only (axis 'd') or key-only ('k') expression."""
        if axis == "d":
            lo_all = -int(self.qb.max())
            values = np.arange(lo_all, int(self.kb.max()) - int(self.qa.min()) + 1)
            cells = eval_mask(m, 1, np.array([-lo_all]), values - lo_all)
            lo, hi = self.ka - self.qb, self.kb - self.qa
        else:
            lo_all = 0
            values = np.arange(self.k_len)
            cells = eval_mask(m, 1, np.array([0]), values)
            lo, hi = self.ka, self.kb
        allowed = np.broadcast_to(cells, (1, 1, 1, len(values))).reshape(-1)
        csum = np.concatenate([[0], np.cumsum(allowed, dtype=np.int64)])
        count = csum[hi - lo_all + 1] - csum[lo - lo_all]
        return np.broadcast_to(_classes(count, hi - lo + 1), self.shape)

    def _reduce(self, cells: np.ndarray) -> np.ndarray:
        nq, nk = self.shape
        padded = np.zeros((nq * self.tq, nk * self.tk), dtype=bool)
        padded[: self.q_len, : self.k_len] = cells
        count = padded.reshape(nq, self.tq, nk, self.tk).sum(axis=(1, 3), dtype=np.int64)
        return _classes(count, (self.qb - self.qa + 1) * (self.kb - self.ka + 1))


def _classes(count: np.ndarray, size: np.ndarray) -> np.ndarray:
    return _pick(count == size, count == 0)


def _pick(full: np.ndarray, empty: np.ndarray) -> np.ndarray:
    return np.where(full, Tile.FULL, np.where(empty, Tile.EMPTY, Tile.PARTIAL)).astype(np.int8)


def _at_head(m: n.Mask, values: dict[n.Mask, bool]) -> n.Mask:
    """``m`` with each heads(...) node replaced by all / none."""
    if m in values:
        return n.All() if values[m] else n.Never()
    kids = n.children(m)
    return n.with_children(m, tuple(_at_head(t, values) for t in kids)) if kids else m


# ---------------------------------------------------------------- density helpers

_RANDOM = "random#{}"  # not an identifier, so never a spec input


def _bind_random(mask: n.Mask, heads: int, q_len: int, k_len: int, q_off: int,
                 inputs: dict[str, np.ndarray]) -> tuple[n.Mask, dict[str, np.ndarray]]:
    """random(...) nodes replaced by mask inputs holding their whole-matrix tables, so that
    parts of the matrix can be evaluated alone."""
    tables: dict[n.Mask, str] = {}

    def sub(m: n.Mask) -> n.Mask:
        kids = n.children(m)
        if kids:
            return n.with_children(m, tuple(sub(t) for t in kids))
        if _support(m) == "r":
            if m not in tables:
                tables[m] = _RANDOM.format(len(tables))
                inputs[tables[m]] = eval_mask(m, heads, np.arange(q_len) + q_off,
                                              np.arange(k_len))
            return n.MaskInput(tables[m])
        return m

    return sub(mask), inputs


def _slice_inputs(mask: n.Mask, inputs: dict[str, np.ndarray], r0: int, r1: int, c0: int,
                  c1: int) -> dict[str, np.ndarray]:
    """Inputs for rows r0:r1 and keys c0:c1: mask(m) tensors cut to the block."""
    out = dict(inputs)
    for m in n.walk(mask):
        for name, role in _reads(m):
            if role == "cells":
                a = np.asarray(inputs[name])
                a = a.reshape((1,) * (4 - a.ndim) + a.shape)
                rows = slice(r0, r1) if a.shape[2] > 1 else slice(None)
                out[name] = a[:, :, rows, slice(c0, c1) if a.shape[3] > 1 else slice(None)]
    return out


def _batch_of(name: str, role: str, inputs: Mapping[str, np.ndarray]) -> int:
    """The batch size an input gives: its first axis ([batch, H, Sq, Sk] for cells)."""
    a = np.asarray(inputs[name])
    if role == "cells":
        return a.shape[0] if a.ndim == 4 else 1
    return a.shape[0]


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [j0, j1) of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
