"""Constant tables every consumer of the IR must agree on: ALiBi slopes, RoPE inverse
frequencies, T5 relative-position buckets and the BigBird random-block choice."""

from __future__ import annotations

import math

import numpy as np


def alibi_slopes(heads: int) -> np.ndarray:
    """Press et al. slopes; for a head count that is not a power of two, BLOOM's rule: the
    closest lower power of two n gives the first n slopes, every other slope of 2n the rest."""
    n = 2 ** int(math.floor(math.log2(heads)))
    base = 2.0 ** (-8.0 / n)
    slopes = [base ** (i + 1) for i in range(n)]
    if n < heads:
        extra = 2.0 ** (-4.0 / n)
        slopes += [extra ** (2 * i + 1) for i in range(heads - n)]
    return np.asarray(slopes, dtype=np.float64)


def rope_inv_freq(dim: int, theta: float) -> np.ndarray:
    """``1 / theta ** (2i / dim)`` for i < dim / 2 (Hugging Face / Llama)."""
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


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
    return np.repeat(np.repeat(blocks, block, 0), block, 1)[:q_len, :k_len]
