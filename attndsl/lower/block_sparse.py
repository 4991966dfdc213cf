"""Block-sparse attention in standard ONNX ops: only the (query, key) pairs a mask can allow
are computed, so work and memory grow with the attended keys, not with q_len x k_len.

Three strategies (``plan.py`` picks one per block):

- **band** (``attend_band``): the allowed offsets ``k - q`` lie in ``[lo, hi]`` (causal &
  sliding, window, chunk, dilated, and per-head mixes whose union is a band). Queries are cut
  into tiles of ``t = min(tile, q_len)`` rows (computed at run time, so a one-token decode step
  is one tile of one row); query tile i gathers the ``t + hi - lo`` keys from
  ``q0 + i*t + lo`` on (clipped indices; keys outside the sequence are masked). One batched
  MatMul gives the scores ``[B, H, tiles, t, keys]``; the mask is evaluated on the gathered
  positions (a ``[t, keys]`` offset table shared by all tiles and a ``[tiles, 1, keys]`` key
  range) and added once; Softmax; MatMul with the gathered values; the padded rows are cut.
- **chunks** (``attend_chunks``): the allowed offsets are bounded above only (causal, causal &
  padding / document / prefix ...). The queries are split into a fixed number of chunks at run
  time; chunk c attends the keys up to its last query (Slice with run-time ends).
- **tiles** (``attend_tiles``): static lengths and an irregular pattern (BigBird random |
  window | global). The tile classification gives each query tile its list of non-empty key
  tiles; query tiles with similar list lengths form a group, each group gathers its lists
  (padded with a masked dummy tile) like a band. Query tiles holding global rows form their
  own group, so the others are not padded to the full key length.

Every strategy evaluates the block's mask and score modifiers with the same lowering as the
dense path (``mask_ops``), on ``PairPositions``; the fully-masked-row guard zeroes the output
rows whose mask allows no key. GQA: the query heads of a group read one gathered kv head
(MatMul broadcasting), keys and values are never repeated.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext as _nullscope
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..ir.nodes import Block
from .builder import GraphBuilder
from .mask_ops import MaskLowering, lower_scores, zero_empty_rows
from .positions import PairPositions, Positions


@dataclass(frozen=True)
class TileGroup:
    """Query tiles ``q_tiles`` [n] and, per query tile, the key tiles it attends
    ``k_tiles`` [n, m] (-1: a masked dummy tile)."""

    q_tiles: np.ndarray
    k_tiles: np.ndarray


@dataclass(frozen=True)
class Context:
    """What the sparse attention of one block needs from the lowering."""

    g: GraphBuilder
    block: Block
    input_types: dict[str, str]
    static_lens: tuple[int | None, int | None]
    float32: Callable[[str], str]
    guard: bool  # some query row may have no allowed key
    # the row softmax (logits with -inf cells, the bool mask or None): a block feature's
    # ``softmax`` rule (sinks), else None for ``Softmax``
    softmax: Callable[[str, str | None], str] | None = None
    # the width of the values when a block feature's ``values`` rule changed it (DIFF
    # attention's [v_g | v_g'] pairs), else None: the block's v_head_dim
    v_width: int | None = None

    def i64(self, value: int) -> str:
        return self.g.scalar(value, "int64")


# ---------------------------------------------------------------- shared pieces


def _grouped_matmul(ctx: Context, a: str, kv: str, fold_rows: bool) -> str:
    """``a`` [B, H, *batch, M, K] @ ``kv`` [B, G, *batch, K, N] (see GraphBuilder);
    ``fold_rows`` (no ``*batch``: query chunks) folds the heads of a group into the rows,
    one GEMM per kv head; gathered tiles broadcast the kv operand over the group."""
    return ctx.g.grouped_matmul(a, kv, ctx.block.heads, ctx.block.kv_heads, fold_rows)


def _keys_t(ctx: Context, k: str, rank: int) -> str:
    """k [..., N, D] -> [..., D, N]."""
    return ctx.g.transpose(k, [*range(rank - 2), rank - 1, rank - 2])


def _attend(ctx: Context, q: str, kt: str, v: str, pp: PairPositions,
            valid: str | None, fold_rows: bool = False) -> str:
    """Attention of q [B, H, *batch, M, D] over the keys kt [B, G, *batch, D, N] (transposed)
    and values v [B, G, *batch, N, Dv] whose cells have positions ``pp``; ``valid`` (bool,
    broadcastable to the pair shape) marks the keys that exist; ``fold_rows``: no ``*batch``
    (``_grouped_matmul``). Returns [B, H, *batch, M, Dv] (float32)."""
    g, b = ctx.g, ctx.block
    s = _grouped_matmul(ctx, q, kt, fold_rows)
    s = lower_scores(g, b, pp, s, ctx.float32)
    allowed = MaskLowering(g, b, pp, ctx.input_types, ctx.static_lens).lower(b.mask)
    if valid is not None and allowed is not False:
        allowed = valid if allowed is True else g.and_(allowed, valid)
    if allowed is False:  # never planned (the plan keeps such blocks dense); still exact
        allowed = g.const([False], bool)
    if allowed is not True:
        zero, minus_inf = g.scalar(0.0, np.float32), g.scalar(-np.inf, np.float32)
        s = g.add(s, g.where(allowed, zero, minus_inf))
    p = (g.op("Softmax", s, axis=-1) if ctx.softmax is None
         else ctx.softmax(s, None if allowed is True else allowed))
    o = _grouped_matmul(ctx, p, v, fold_rows)
    if ctx.guard and allowed is not True:  # rows with no allowed key: 0, not NaN
        o = zero_empty_rows(g, allowed, o, empty_safe=True)
    return o


def _gather_tiles(ctx: Context, q: str, rows: str) -> str:
    """Query rows ``rows`` [n, t] of q [B, H, Sq, D] as tiles [B, H, n, t, D]."""
    return ctx.g.gather(q, rows, axis=2)


def _untile(ctx: Context, o: str, sq: str) -> str:
    """[B, H, n, t, Dv] -> [B, H, Sq, Dv] (the padded rows of the last tile cut)."""
    g = ctx.g
    return g.op("Slice", _merge_tiles(ctx, o), g.i64(0), g.reshape(sq, [1]), g.i64(2))


def _merge_tiles(ctx: Context, o: str) -> str:
    """[B, H, n, t, Dv] -> [B, H, n*t, Dv] (explicit shape with allowzero: batch may be 0)."""
    g = ctx.g
    rows = g.mul(g.shape(o, 2, 3), g.shape(o, 3, 4))
    shape = g.concat([g.shape(o, 0, 2), rows, g.i64(ctx.v_width or ctx.block.v_head_dim)],
                     axis=0)
    return g.op("Reshape", o, shape, allowzero=1)


# ---------------------------------------------------------------- band


def attend_band(ctx: Context, q: str, k: str, v: str, pos: Positions, tile: int, lo: int,
                hi: int, pieces: int = 1) -> str:
    """Attention whose allowed offsets ``k - q`` lie in ``[lo, hi]``: q [B, H, Sq, D] (scaled),
    k [B, G, Sk, D], v [B, G, Sk, Dv] (float32) -> [B, H, Sq, Dv]. The tiles are processed in
    ``pieces`` consecutive runs (bounds from the run-time tile count), so the gathered keys
    and the scores of one run only are alive at a time."""
    g, i64 = ctx.g, ctx.i64
    sq, sk, q0 = g.dim(q, 2), pos.k_total, pos.q_first
    t = g.op("Max", g.op("Min", sq, i64(tile)), i64(1))  # rows per tile
    n = g.div(g.add(sq, g.sub(t, i64(1))), t)  # tiles
    width = g.add(t, i64(hi - lo))  # keys per tile
    one = i64(1)
    starts = g.unsqueeze(g.mul(g.range(i64(0), n, one), t), [1])  # [n, 1] first row
    r, j = g.range(i64(0), t, one), g.range(i64(0), width, one)  # [t], [W]
    rows = g.add(starts, r)  # [n, t]
    keys = g.add(g.add(starts, g.add(q0, i64(lo))), j)  # [n, W] absolute key positions
    offsets = g.unsqueeze(g.sub(g.unsqueeze(r, [1]), g.add(j, i64(lo))), [0])  # [1, t, W]
    q_rows = g.op("Clip", rows, i64(0), g.sub(sq, one))
    k_idx = g.op("Clip", keys, i64(0), g.sub(sk, one))
    valid = g.and_(g.greater_equal(keys, i64(0)), g.less(keys, sk))  # [n, W]
    bounds = [g.i64(0), *(g.reshape(g.div(g.mul(n, i64(p)), i64(pieces)), [1])
                          for p in range(1, pieces)), g.reshape(n, [1])]
    outs = []
    for p in range(pieces):
        with g.scope(f"piece{p}") if pieces > 1 else _nullscope():
            def part(x: str, p: int = p) -> str:
                return x if pieces == 1 else g.op("Slice", x, bounds[p], bounds[p + 1],
                                                   g.i64(0))

            k_p = part(k_idx)
            pp = PairPositions(g, g.unsqueeze(g.add(part(rows), q0), [2]),
                               g.unsqueeze(part(keys), [1]), 3, sk, q0, offsets=offsets)
            q_t = _gather_tiles(ctx, q, part(q_rows))
            k_t, v_t = g.gather(k, k_p, axis=2), g.gather(v, k_p, axis=2)  # [B, G, n, W, D]
            outs.append(_attend(ctx, q_t, _keys_t(ctx, k_t, 5), v_t, pp,
                                g.unsqueeze(part(valid), [1])))
    o = outs[0] if pieces == 1 else g.concat(outs, axis=2)
    return _untile(ctx, o, sq)


# ---------------------------------------------------------------- chunks


def attend_chunks(ctx: Context, q: str, k: str, v: str, pos: Positions, chunks: int,
                  hi: int | None) -> str:
    """Attention in query chunks: the queries in ``chunks`` chunks (bounds from the run-time
    length). With ``hi`` (the allowed offsets are at most ``hi``) chunk c attends the keys up
    to its last query + hi (a prefix Slice of the keys and values); with ``hi`` None (the
    chunked dense lowering) every chunk attends every key, nothing is sliced but the queries.
    Only one chunk's scores [B, H, rows, keys] are alive at a time."""
    g, i64 = ctx.g, ctx.i64
    sq, sk, q0 = g.dim(q, 2), pos.k_total, pos.q_first
    one = i64(1)
    bounds = [g.div(g.mul(sq, i64(c)), i64(chunks)) for c in range(1, chunks)]
    bounds = [i64(0), *bounds, sq]
    kt = _keys_t(ctx, k, 4)  # once: each chunk reads (a prefix of) the transposed keys
    outs = []
    all_keys: list[str] = []  # every key's position [1, Sk], built once when a mask reads it
    for c in range(chunks):
        with g.scope(f"chunk{c}"):
            r0, r1 = bounds[c], bounds[c + 1]
            if hi is None:
                q_c = g.op("Slice", q, g.reshape(r0, [1]), g.reshape(r1, [1]), g.i64(2))
                kt_c, v_c = kt, v
                pp: PairPositions = _ChunkPairs(g, (r0, r1), all_keys, sk, q0)
            else:
                end = g.op("Clip", g.add(g.add(q0, r1), i64(hi)), one, sk)  # keys [0, end)
                end1 = g.reshape(end, [1])
                q_c = g.op("Slice", q, g.reshape(r0, [1]), g.reshape(r1, [1]), g.i64(2))
                kt_c = g.op("Slice", kt, g.i64(0), end1, g.i64(3))  # [B, G, D, end]
                v_c = g.op("Slice", v, g.i64(0), end1, g.i64(2))
                q_col = g.unsqueeze(g.range(g.add(q0, r0), g.add(q0, r1), one), [1])
                keys = g.unsqueeze(g.range(i64(0), end, one), [0])  # [1, end]
                pp = PairPositions(g, q_col, keys, 2, sk, q0)
            outs.append(_attend(ctx, q_c, kt_c, v_c, pp, None, fold_rows=True))
    return g.concat(outs, axis=2)


class _ChunkPairs(PairPositions):
    """The positions of a query chunk [r0, r1) against every key, built only when a mask or
    score rule reads them (an unmasked block reads none: its chunks are MatMul, Softmax,
    MatMul). The key row is shared by all chunks (``shared`` holds it once built)."""

    def __init__(self, g: GraphBuilder, rows: tuple[str, str], shared: list[str],
                 k_total: str, q_first: str):
        self.g, self.pair_rank, self.k_total, self.q_first = g, 2, k_total, q_first
        self._rows, self._shared = rows, shared
        self._offsets, self.cheap_offsets = None, False

    @cached_property
    def q_col(self) -> str:  # type: ignore[override]
        g, (r0, r1) = self.g, self._rows
        one = g.scalar(1, "int64")
        return g.unsqueeze(g.range(g.add(self.q_first, r0), g.add(self.q_first, r1), one), [1])

    @cached_property
    def k(self) -> str:  # type: ignore[override]
        if not self._shared:
            g = self.g
            self._shared.append(g.unsqueeze(
                g.range(g.scalar(0, "int64"), self.k_total, g.scalar(1, "int64")), [0]))
        return self._shared[0]

    @property
    def k_row(self) -> str:  # type: ignore[override]
        return self.k


# ---------------------------------------------------------------- static tile lists


def attend_tiles(ctx: Context, q: str, k: str, v: str, tile: int,
                 groups: tuple[TileGroup, ...], q_len: int, k_len: int) -> str:
    """Attention over static per-query-tile lists of key tiles (static lengths, no past)."""
    g = ctx.g
    r, j = np.arange(tile), np.arange(tile)
    outs, order = [], []
    for gi, grp in enumerate(groups):
        with g.scope(f"group{gi}"):
            rows = grp.q_tiles[:, None] * tile + r  # [n, t]
            keys = (np.maximum(grp.k_tiles, 0)[:, :, None] * tile + j).reshape(len(rows), -1)
            exists = np.repeat(grp.k_tiles >= 0, tile, axis=1) & (keys < k_len)  # [n, W]
            q_col = g.const(rows[:, :, None], np.int64)
            pp = PairPositions(g, q_col, g.const(keys[:, None, :], np.int64), 3,
                               g.scalar(k_len, "int64"), g.scalar(0, "int64"))
            q_t = _gather_tiles(ctx, q, g.const(np.minimum(rows, q_len - 1), np.int64))
            k_idx = g.const(np.minimum(keys, k_len - 1), np.int64)
            k_t, v_t = g.gather(k, k_idx, axis=2), g.gather(v, k_idx, axis=2)
            valid = None if exists.all() else g.const(exists[:, None, :], bool)
            outs.append(_attend(ctx, q_t, _keys_t(ctx, k_t, 5), v_t, pp, valid))
            order.extend(grp.q_tiles.tolist())
    o = outs[0] if len(outs) == 1 else g.concat(outs, axis=2)  # [B, H, nq, t, Dv]
    if order != sorted(order):
        o = g.gather(o, g.const(np.argsort(order), np.int64), axis=2)
    flat = _merge_tiles(ctx, o)
    return flat if q_len == len(order) * tile else g.slice(flat, [0], [q_len], [2])
