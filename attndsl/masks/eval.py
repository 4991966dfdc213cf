"""Numpy evaluation of mask expressions: the ground truth of the mask algebra."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import nodes as n
from .tables import random_blocks


def eval_mask(mask: n.Mask, heads: int, q_pos: np.ndarray, k_pos: np.ndarray, batch: int = 1,
              inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Bool array broadcastable to ``[batch, heads, len(q_pos), len(k_pos)]``.

    ``q_pos``/``k_pos`` are absolute positions; ``inputs`` supplies the tensors that
    padding / document / mask(m) read."""
    q = np.asarray(q_pos, dtype=np.int64)[None, None, :, None]
    k = np.asarray(k_pos, dtype=np.int64)[None, None, None, :]
    inputs = inputs or {}
    return np.asarray(_eval(mask, heads, q, k, inputs), dtype=bool)


def _as4(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape((1,) * (4 - a.ndim) + a.shape)


def _eval(m: n.Mask, heads: int, q: np.ndarray, k: np.ndarray, inputs) -> np.ndarray:
    if isinstance(m, n.All):
        return np.ones((1, 1, 1, 1), bool)
    if isinstance(m, n.Never):
        return np.zeros((1, 1, 1, 1), bool)
    if isinstance(m, n.Causal):
        return k <= q
    if isinstance(m, n.Window):
        return (k >= q - m.left) & (k <= q + m.right)
    if isinstance(m, n.Sliding):
        return (k <= q) & (q - k < m.size)
    if isinstance(m, n.Dilated):
        return (k >= q - m.left) & (k <= q + m.right) & ((q - k) % m.dilation == 0)
    if isinstance(m, n.Strided):
        return (q - k) % m.stride == 0
    if isinstance(m, n.Chunk):
        return q // m.size == k // m.size
    if isinstance(m, n.Summary):
        return np.broadcast_to(k % m.c >= m.c - m.n, k.shape)
    if isinstance(m, n.Prefix):
        return np.broadcast_to(k < m.n, k.shape)
    if isinstance(m, n.Global):
        pos = np.asarray(m.positions)
        return np.isin(q, pos) | np.isin(k, pos)
    if isinstance(m, n.Heads):
        return np.isin(np.arange(heads), m.heads)[None, :, None, None]
    if isinstance(m, n.Random):
        table = random_blocks(m.r, m.block, m.seed, q.shape[2], k.shape[3])
        return table[None, None]
    if isinstance(m, n.Padding):
        lens = np.asarray(inputs[m.input]).astype(np.int64)
        return k < lens[:, None, None, None]
    if isinstance(m, n.Document):
        ids = np.asarray(inputs[m.input]).astype(np.int64)  # [batch, k_len]
        qi = ids[:, q[0, 0, :, 0]]
        ki = ids[:, k[0, 0, 0, :]]
        return (qi[:, :, None] == ki[:, None, :])[:, None]
    if isinstance(m, n.MaskInput):
        return _as4(np.asarray(inputs[m.input]).astype(bool))
    if isinstance(m, n.Not):
        return ~_eval(m.term, heads, q, k, inputs)
    if isinstance(m, n.And):
        out = np.ones((1, 1, 1, 1), bool)
        for t in m.terms:
            out = out & _eval(t, heads, q, k, inputs)
        return out
    if isinstance(m, n.Or):
        out = np.zeros((1, 1, 1, 1), bool)
        for t in m.terms:
            out = out | _eval(t, heads, q, k, inputs)
        return out
    raise TypeError(f"not a mask node: {m!r}")
