"""Numpy evaluation of mask expressions: the ground truth of the mask algebra.

Each node is evaluated by its feature's ``eval`` rule (``features.registry``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..features import nodes as n
from ..features.registry import rule


def eval_mask(mask: n.Mask, heads: int, q_pos: np.ndarray, k_pos: np.ndarray, batch: int = 1,
              inputs: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Bool array broadcastable to ``[batch, heads, len(q_pos), len(k_pos)]``.

    ``q_pos``/``k_pos`` are absolute positions; ``inputs`` supplies the tensors that
    padding / document / mask(m) read."""
    q = np.asarray(q_pos, dtype=np.int64)[None, None, :, None]
    k = np.asarray(k_pos, dtype=np.int64)[None, None, None, :]
    return np.asarray(Evaluation(heads, q, k, inputs or {}).eval(mask), dtype=bool)


@dataclass(frozen=True)
class Evaluation:
    """What an ``eval`` rule receives: the head count, query positions ``q`` [1, 1, Sq, 1],
    key positions ``k`` [1, 1, 1, Sk], the inputs, and ``eval`` for sub-expressions."""

    heads: int
    q: np.ndarray
    k: np.ndarray
    inputs: Mapping[str, np.ndarray]

    def eval(self, m: n.Mask) -> np.ndarray:
        return rule("eval", m)(m, self)
