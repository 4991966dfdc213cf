"""``random(r, block=64, seed=0)``: BigBird random key blocks (static lengths only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import LoweringError
from ...source import Span
from ..base import (
    NO_FUSED,
    NO_WITNESS,
    UNBOUNDED,
    Algebra,
    Feature,
    Mask,
    Param,
    Tiles,
    constant,
    span_field,
)


@dataclass(frozen=True, slots=True)
class Random(Mask):
    """BigBird random blocks; needs static lengths (see ``random_blocks``)."""

    r: int
    block: int
    seed: int
    span: Span | None = span_field()


def random_chosen(r: int, block: int, seed: int, q_len: int, k_len: int) -> list[np.ndarray]:
    """The procedure of docs/language.md: key blocks chosen for each query block, in order."""
    nq, nk = -(-q_len // block), -(-k_len // block)
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(nk, size=min(r, nk), replace=False)) for _ in range(nq)]


def random_blocks(r: int, block: int, seed: int, q_len: int, k_len: int) -> np.ndarray:
    """Cell mask [q_len, k_len] of ``random(r, block=block, seed=seed)``."""
    chosen = random_chosen(r, block, seed, q_len, k_len)
    nk = -(-k_len // block)
    blocks = np.zeros((len(chosen), nk), dtype=bool)
    for qb, ks in enumerate(chosen):
        blocks[qb, ks] = True
    # indexed, not np.repeat then cut: the work is q_len x k_len whatever the block size
    return blocks[np.arange(q_len)[:, None] // block, np.arange(k_len)[None, :] // block]


def _eval(m: Random, ev):
    return random_blocks(m.r, m.block, m.seed, ev.q.shape[2], ev.k.shape[3])[None, None]


def _lookup(m: Random, ctx, q_len: int, k_len: int) -> str:
    """random(...) at the positions of a piece: its block table [nq, nk] read at
    (query row // block, key // block), flattened to one Gather."""
    g, p = ctx.g, ctx.pos
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


def _lower(m: Random, ctx) -> str:
    q_len, k_len = ctx.static_lens
    if q_len is None or k_len is None:
        raise LoweringError(f"block '{ctx.block.name}': random(...) needs static query "
                            "and key lengths", m.span)
    if ctx.pos.whole:
        return ctx.g.const(random_blocks(m.r, m.block, m.seed, q_len, k_len), bool)
    return _lookup(m, ctx, q_len, k_len)


def _check(m: Random, ctx) -> None:
    ql, kl = ctx.size(ctx.q.seq), ctx.size(ctx.k.seq)
    if ql is None or kl is None or ctx.cache:
        ctx.err("random(...) needs static query and key lengths", m.span,
                "give the sequence dims fixed sizes (and no cache)")


FEATURE = Feature(
    name="random", kind="mask", node=Random,
    params=(Param("r", "int", minimum=1), Param("block", "int", 64, minimum=1),
            Param("seed", "int", 0)), doc="BigBird random key blocks",
    check=_check,
    format=lambda m: f"random({m.r}, block={m.block}, seed={m.seed})",
    eval=_eval,
    witnesses=NO_WITNESS,
    algebra=Algebra(rank=110),
    tiles=Tiles(support=constant("r"), sizes=lambda m: (m.block,)),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=NO_FUSED,
    viz=lambda m: m.block,
    inputs=constant(()),
)
