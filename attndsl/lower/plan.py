"""Per-block choice between dense and block-sparse attention (``--sparse``, ``--block-size``).

``plan_block`` looks at the block's mask (simplified, per head) and finds which sparse
strategies of ``block_sparse`` apply:

- band: the union of the allowed offsets ``k - q`` is a bounded interval [lo, hi];
- chunks: the offsets are bounded above (causal-like, or a band too wide to gather); with a
  KV cache only when forced (``--sparse block``): a decode step has a handful of query rows,
  and chunking them only adds nodes;
- tiles: static lengths and no cache, with empty tiles in the tile classification.

Blocks whose mask is not bounded above (no mask, ``padding``, ``~causal``, global rows ...)
run as **chunked dense** (``dense_chunks``, ``auto`` only, no cache) when one [H, Sq, Sk]
score tensor would pass ``DENSE_MAX_MIB``: the queries in chunks that each attend every key,
so only one chunk's scores are alive at a time and peak memory grows with S, not S². It is a
memory choice (it never computes fewer cells, and each chunk re-packs K and V: measured at
best as fast as the one-tensor graph); a block-sparse plan the cost model finds cheaper
still wins.

``--sparse dense`` keeps every block dense (one score tensor), ``block`` takes the best
applicable block-sparse strategy, ``auto`` compares the cost model's estimates of the
block-sparse and chunked dense plans with dense and takes the cheapest. Blocks whose
probabilities are a graph output, whose mask is an input (``mask(m)``) or that add a
``bias(t)`` input stay dense: those are indexed by absolute cells. Dynamic lengths are costed
at ``SparseOptions.seq_hint`` (default 4096).

The cost model estimates milliseconds on ONNX Runtime CPU with 2 threads: matmul FLOPs at the
rate of large and of tile-sized GEMMs, a per-score-cell cost of the elementwise passes (mask,
Softmax: the dense graph's are slower, its score tensor never fits a cache), a per-element
cost of gathered or sliced keys/values (and of the keys/values a chunk's GEMMs re-pack), and
a fixed cost per node. The constants come from ORT profiles of ``benchmarks/sparse_probe.py``
(core attention, H=12, D=64, fp32, two pinned cores; see ``CostModel``); the chunked dense
plan's figures (chunk size, re-packing) from paired timings of the dense-{1024,2048,4096}
benchmark cases (benchmarks/README.md, "Cost model calibration"); only their ratios matter
for the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..features import nodes as mn
from ..features.registry import rule
from ..features.text import format_leaf
from ..ir.nodes import Block
from ..masks.algebra import offsets, simplify
from ..masks.analysis import Tile, classify_tiles
from .block_sparse import TileGroup
from .targets import SPARSE_MODES

MODES = SPARSE_MODES  # the strategies, from the target table
TILE_CHOICES = (32, 64, 128)
DEFAULT_SEQ = 4096
PIECE_BYTES = 64 << 20  # working memory of one run of band tiles (smaller runs stay in cache)
MAX_PIECES = 32
CHUNK_CHOICES = (2, 4, 8, 16, 32)
DENSE_CHUNK_ROWS = (64, 128, 256, 512)  # query rows per chunk of the chunked dense lowering
MAX_DENSE_CHUNKS = 256
# a one-tensor score graph above this (per batch row; the probabilities as much again) runs
# in query chunks instead, whatever the estimates say: measured at S=4096 (768 MiB), the
# chunks took 1.02-1.15x the one-tensor graph's time and 202 instead of 871 MiB peak
DENSE_MAX_MIB = 512


@dataclass(frozen=True)
class SparseOptions:
    """``mode``: auto | dense | block; ``block_size``: the tile size (None: the cost model
    picks); ``seq_hint``: the length dynamic dims are costed at (None: 4096)."""

    mode: str = "auto"
    block_size: int | None = None
    seq_hint: int | None = None


@dataclass(frozen=True)
class CostModel:
    """Estimated milliseconds of one attention. Fitted to ORT profiles of
    ``benchmarks/sparse_probe.py`` at S=4096 (causal: dense and 16 query chunks) and S=8192
    (sliding(256), tile 64); the profile figures are in benchmarks/README.md ("Cost model
    calibration")."""

    gemm_gflops: float = 125.0  # large batched GEMMs (dense scores, query chunks)
    tile_gflops: float = 115.0  # tile GEMMs ([t, D] x [D, W], t = 32..128)
    dense_cell_ns: float = 3.0  # Where + Softmax over the whole [B, H, Sq, Sk] scores
    cell_ns: float = 1.6  # mask Add + Softmax per computed cell of a chunk or tile run
    copy_ns: float = 0.6  # per gathered or sliced key / value element
    node_us: float = 15.0  # fixed cost of one node
    # the chunked dense lowering (``_dense_chunks``): rows per chunk such that one chunk's
    # scores stay within ``chunk_mib`` (smaller chunks pay more re-packing of K^T and V by
    # their GEMMs, ``copy_ns`` per element; larger ones ran slower at S=4096)
    chunk_mib: float = 64.0
    dense_chunk_nodes: int = 8  # nodes per chunk (Slice, 2 MatMul, Softmax, reshapes)

    def estimate(self, b: Block, cells: float, gflops: float, cell_ns: float, copied: float,
                 nodes: int) -> float:
        """``cells`` score cells over all heads; ``copied`` key/value elements moved."""
        flops = 2.0 * cells * (b.head_dim + b.v_head_dim)
        return (flops / gflops * 1e-6 + cells * cell_ns * 1e-6 + copied * self.copy_ns * 1e-6
                + nodes * self.node_us * 1e-3)


COST = CostModel()


@dataclass(frozen=True)
class Plan:
    """How one block is lowered: ``kind`` dense | band | chunks | tiles, and why."""

    kind: str
    reason: str
    tile: int = 0
    lo: int = 0
    hi: int = 0
    chunks: int = 0
    pieces: int = 1
    groups: tuple[TileGroup, ...] = ()
    q_len: int = 0
    k_len: int = 0

    @property
    def lowering(self) -> str:
        if self.kind in ("dense", "dense_chunks"):
            return "portable/dense" + (" chunks" if self.kind == "dense_chunks" else "")
        return f"portable/block-sparse {self.kind}"


# ---------------------------------------------------------------- mask analysis

Bounds = tuple[int | None, int | None]


class _BoundsContext:
    """What a feature's ``bounds`` rule receives: ``bounds(sub)`` and ``offsets(sub)``."""

    bounds = staticmethod(lambda m: offset_bounds(m))
    offsets = staticmethod(offsets)


def offset_bounds(m: mn.Mask) -> Bounds | None:
    """Bounds ``(lo, hi)`` on the offsets ``k - q`` of every cell ``m`` allows (None: that
    side is unbounded); None when ``m`` allows no cell. Sound, not always tight."""
    return rule("bounds", m)(m, _BoundsContext)


def _tile_sizes(node: mn.Mask) -> tuple[int, ...]:
    """Tile sizes that fit the node's own blocks (random(...): its block)."""
    f = rule("tiles", node).sizes
    return () if f is None else f(node)


def _cell_inputs(node: object) -> list[str]:
    """The inputs a node reads over every (query, key) cell (mask(m), bias(t))."""
    return [name for name, role in rule("inputs", node)(node) if role == "cells"]


def _dense_reason(b: Block, wants_weights: bool) -> str | None:
    """Why the block must stay dense whatever the mode (None: it may be sparse)."""
    if b.static_cache:
        return (f"a static KV cache: the keys are the {b.cache_max_len} slots of its buffer, "
                "those not yet written masked")
    if wants_weights:
        return f"'{b.name}.weights' is an output: the probabilities of every pair are needed"
    for mod in b.score:
        if _cell_inputs(mod):
            return f"score {format_leaf(mod)} is an input over every (query, key) cell"
    for node in mn.walk(b.mask):
        if _cell_inputs(node):
            return f"{format_leaf(node)} is an input over every (query, key) cell"
    if simplify(b.mask, b.heads) == mn.Never():
        return "the mask allows no key"
    return None


# ---------------------------------------------------------------- candidates


def _band(b: Block, lo: int, hi: int, sq: int, sk: int, tile: int) -> tuple[float, Plan]:
    t = max(1, min(tile, sq))
    n, width = -(-sq // t), t + hi - lo
    cells = n * t * width * b.heads
    gathered = n * width * b.kv_heads * (b.head_dim + b.v_head_dim)
    # scores, masked scores, probabilities, gathered keys/values, alive at once (float32)
    live = 4 * (3 * cells + gathered + n * t * b.heads * (b.head_dim + b.v_head_dim))
    pieces = max(1, min(MAX_PIECES, -(-live // PIECE_BYTES)))
    ms = COST.estimate(b, cells, COST.tile_gflops, COST.cell_ns, gathered, 30 + 14 * pieces)
    frac = min(1.0, width / sk)
    runs = "" if pieces == 1 else f", in {pieces} runs of tiles"
    return ms, Plan("band", f"block-sparse band, tile {tile}, offsets {lo}..{hi} "
                    f"({t + hi - lo} keys per tile: {100 * frac:.1f}% of {sk} keys at "
                    f"length {sq}{runs})", tile=tile, lo=lo, hi=hi, pieces=pieces)


def _chunks(b: Block, hi: int, sq: int, sk: int, chunks: int, q0: int) -> tuple[float, Plan]:
    cells = copied = 0
    for c in range(chunks):
        r0, r1 = sq * c // chunks, sq * (c + 1) // chunks
        end = min(sk, max(1, q0 + r1 + hi))
        cells += (r1 - r0) * end * b.heads
        copied += end * b.kv_heads * (b.head_dim + b.v_head_dim)
    ms = COST.estimate(b, cells, COST.gemm_gflops, COST.cell_ns, copied, 6 + 16 * chunks)
    frac = cells / (b.heads * sq * sk)
    return ms, Plan("chunks", f"block-sparse chunks: queries in {chunks} chunks, each "
                    f"attending keys up to its last query{'' if hi == 0 else f' + {hi}'} "
                    f"({100 * frac:.1f}% of the pairs at length {sq})", chunks=chunks, hi=hi)


def _dense_chunks(b: Block, sq: int, sk: int, rows: int) -> tuple[float, Plan]:
    chunks = max(2, min(MAX_DENSE_CHUNKS, -(-sq // rows)))
    rows = -(-sq // chunks)
    cells = b.heads * sq * sk
    # every chunk's two GEMMs pack their right operand (K^T, V) again: per kv head (the query
    # heads of a group are folded into the rows), sk x (D + Dv) elements per chunk
    packed = chunks * b.kv_heads * sk * (b.head_dim + b.v_head_dim)
    chunk_mib = 4 * b.heads * rows * sk / 2**20  # one chunk's scores, per batch row
    ms = COST.estimate(b, cells, COST.gemm_gflops, COST.dense_cell_ns, packed,
                       6 + COST.dense_chunk_nodes * chunks)
    if chunk_mib > COST.chunk_mib:  # a chunk whose scores spill: a last resort
        ms *= 2
    return ms, Plan("dense_chunks", f"dense attention in {chunks} query chunks of {rows} rows "
                    f"(one chunk's scores alive at a time: {chunk_mib:.3g} MiB per batch row "
                    f"at length {sq})", chunks=chunks)


def _scores_mib(b: Block, sq: int, sk: int) -> float:
    """MiB of one [H, Sq, Sk] float32 score tensor (one batch row)."""
    return 4 * b.heads * sq * sk / 2**20


def _group(counts: np.ndarray, max_groups: int = 3) -> list[np.ndarray]:
    """Query tiles split into at most ``max_groups`` groups of consecutive key-tile counts
    (sorted), minimizing the padded work sum(group size x its largest count) plus about one
    tile row of work per extra group (dynamic programming over the sorted counts)."""
    order = np.argsort(counts, kind="stable")
    c = counts[order].astype(np.int64)
    n, penalty = len(c), max(1, int(c.max()))
    ends = np.arange(1, n + 1)
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    choices: list[np.ndarray] = []
    best, best_k = np.inf, 1
    for k in range(1, max_groups + 1):
        # new[end] = min over start < end of cost[start] + (end - start) * c[end - 1]
        starts = np.arange(n)
        table = cost[None, :n] + (ends[:, None] - starts[None, :]) * c[:, None]
        table[starts[None, :] >= ends[:, None]] = np.inf
        arg = table.argmin(axis=1)
        cost = np.concatenate([[np.inf], table[np.arange(n), arg] + penalty])
        choices.append(arg)
        if cost[n] < best:
            best, best_k = cost[n], k
    spans, end = [], n
    for k in range(best_k, 0, -1):
        start = int(choices[k - 1][end - 1])
        spans.append((start, end))
        end = start
    return [order[s:e] for s, e in reversed(spans)]


def tile_groups(b: Block, q_len: int, k_len: int, tile: int) -> tuple[TileGroup, ...] | None:
    """The static tile lists of a block's mask (None: no tile is empty)."""
    cls = classify_tiles(b.mask, b.heads, q_len, k_len, tile, 0, b.self_attention)
    need = (cls != Tile.EMPTY).any(axis=0)  # [nq, nk]: some head attends the tile
    if need.all():
        return None
    counts = need.sum(axis=1)
    groups = []
    for members in _group(counts):
        members = np.sort(members)
        width = max(1, int(counts[members].max()))
        table = np.full((len(members), width), -1, dtype=np.int64)
        for i, qt in enumerate(members):
            ks = np.flatnonzero(need[qt])
            table[i, : len(ks)] = ks
        groups.append(TileGroup(members.astype(np.int64), table))
    return tuple(groups)


def _tiles(b: Block, sq: int, sk: int, tile: int) -> tuple[float, Plan] | None:
    groups = tile_groups(b, sq, sk, tile)
    if groups is None:
        return None
    cells = sum(len(gr.q_tiles) * tile * gr.k_tiles.shape[1] * tile for gr in groups) * b.heads
    if cells >= b.heads * sq * sk:  # the padded lists cover as many cells as dense
        return None
    gathered = sum(gr.k_tiles.size * tile for gr in groups) * b.kv_heads * (
        b.head_dim + b.v_head_dim)
    ms = COST.estimate(b, cells, COST.tile_gflops, COST.cell_ns, gathered, 25 * len(groups))
    frac = cells / (b.heads * sq * sk)
    sizes = ", ".join(f"{len(gr.q_tiles)}x{gr.k_tiles.shape[1]}" for gr in groups)
    return ms, Plan("tiles", f"block-sparse tile lists, tile {tile}: query tiles x key tiles "
                    f"{sizes} ({100 * frac:.1f}% of the pairs)", tile=tile,
                    groups=groups, q_len=sq, k_len=sk)


def _dense_ms(b: Block, sq: int, sk: int) -> float:
    return COST.estimate(b, b.heads * sq * sk, COST.gemm_gflops, COST.dense_cell_ns, 0, 12)


def plan_block(b: Block, q_len: int | None, k_len: int | None, wants_weights: bool,
               options: SparseOptions | None = None) -> Plan:
    """The lowering of block ``b``. ``q_len``/``k_len`` are the static query and key
    (stream) lengths, None when dynamic; with a cache the key length is unknown."""
    options = options or SparseOptions()
    if options.mode not in MODES:
        raise ValueError(f"unknown sparse mode {options.mode!r}")
    if options.mode == "dense":
        return Plan("dense", "dense attention over all query/key pairs (--sparse dense)")
    why = _dense_reason(b, wants_weights)
    if why is not None:
        return Plan("dense", f"dense attention: {why}")
    mask = simplify(b.mask, b.heads)
    unmasked = mask == mn.All()
    bounds = None if unmasked else offset_bounds(mask)
    hint = options.seq_hint or DEFAULT_SEQ
    static = q_len is not None and k_len is not None and not b.cache
    sq = q_len if q_len is not None else hint
    sk = (k_len if k_len is not None else hint) if not b.cache else sq
    at = "" if static else f" (dynamic lengths costed at {sq})"
    tiles = (options.block_size,) if options.block_size else TILE_CHOICES
    cands: list[tuple[float, Plan]] = []
    if bounds is not None and bounds[0] is not None and bounds[1] is not None:
        cands += [_band(b, bounds[0], bounds[1], sq, sk, t) for t in tiles]
    if bounds is not None and bounds[1] is not None and (not b.cache or options.mode == "block"):
        cands += [_chunks(b, bounds[1], sq, sk, c, 0) for c in CHUNK_CHOICES]  # wide bands too
    if static and not cands and not unmasked:
        tile_sizes = tiles if options.block_size else tuple(
            sorted({*tiles, *(t for n in mn.walk(mask) for t in _tile_sizes(n))}))
        cands += [c for c in (_tiles(b, sq, sk, t) for t in tile_sizes if t <= max(sq, sk))
                  if c is not None]
    if options.mode == "block" and cands:
        ms, best = min(cands, key=lambda c: c[0])
        return _with_reason(best, f"{best.reason}; forced by --sparse block")
    too_big = _scores_mib(b, sq, sk) > DENSE_MAX_MIB
    if (options.mode == "auto" and not b.cache and (bounds is None or bounds[1] is None)
            and too_big):  # every key may be attended, and one score tensor is too big
        ms, best = min((_dense_chunks(b, sq, sk, r) for r in DENSE_CHUNK_ROWS),
                       key=lambda c: c[0])
        sparse = [c for c in cands if c[0] < ms]
        if not sparse:
            return _with_reason(best, f"{best.reason}; one score tensor would take "
                                f"{_scores_mib(b, sq, sk):.4g} MiB per batch row (over "
                                f"{DENSE_MAX_MIB} MiB), estimated {ms:.3g} ms vs dense "
                                f"{_dense_ms(b, sq, sk):.3g} ms{at}")
    if not cands:
        fits = ("" if b.cache or options.mode != "auto" else
                f" (its scores, {_scores_mib(b, sq, sk):.4g} MiB per batch row{at}, fit the "
                f"{DENSE_MAX_MIB} MiB a one-tensor graph may take)")
        reason = (f"no mask: every (query, key) pair is attended{fits}" if unmasked
                  else "the mask's pattern has no empty tiles to skip" if bounds is None
                  or static
                  else "causal-like with a KV cache: decode steps have few query rows"
                  if b.cache and bounds[1] is not None
                  else "no bounded offset band, and lengths are dynamic (tile lists need "
                  "static lengths)")
        return Plan("dense", f"dense attention: {reason}")
    dense_ms = _dense_ms(b, sq, sk)
    ms, best = min(cands, key=lambda c: c[0])
    if ms < dense_ms:
        return _with_reason(best, f"{best.reason}; estimated {ms:.3g} ms vs dense "
                            f"{dense_ms:.3g} ms{at}")
    return Plan("dense", f"dense attention: cheaper than the best sparse plan "
                f"({best.kind}, estimated {ms:.3g} ms vs dense "
                f"{dense_ms:.3g} ms{at})")


def _with_reason(p: Plan, reason: str) -> Plan:
    return replace(p, reason=reason)
