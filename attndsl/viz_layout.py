"""Layout shared by the text (``viz``) and PNG (``viz_png``) pictures: which heads share a
panel and its label, pooling a grid to fewer cells, and the spacing of axis ticks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------- panels


def head_label(heads: Sequence[int]) -> str:
    """``head 0``, ``heads 0-3``, ``heads 0-1, 4``."""
    hs = sorted(heads)
    runs: list[list[int]] = []
    for h in hs:
        if runs and h == runs[-1][-1] + 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    parts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    return ("head " if len(hs) == 1 else "heads ") + ", ".join(parts)


def group_heads(grid: np.ndarray, tiles: np.ndarray | None = None) -> list[list[int]]:
    """Indices (into ``grid``) of slices with identical pictures, in first-seen order."""
    groups: dict[bytes, list[int]] = {}
    for i in range(grid.shape[0]):
        key = grid[i].tobytes() + (b"" if tiles is None else tiles[i].tobytes())
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def panel_groups(grid: np.ndarray, heads: Sequence[int] | None,
                 tiles: np.ndarray | None) -> list[tuple[str, list[int], int]]:
    """One panel per group of identical slices of ``grid`` [n, q, k] (with their tile maps
    when ``tiles`` is given): its label, the head numbers it stands for (``heads`` names
    the slices, default 0..n-1) and the index of the slice to draw."""
    heads = list(range(grid.shape[0])) if heads is None else list(heads)
    if len(heads) != grid.shape[0]:
        raise ValueError(f"{len(heads)} head labels for {grid.shape[0]} grid slices")
    return [(head_label([heads[i] for i in g]), [heads[i] for i in g], g[0])
            for g in group_heads(grid, tiles)]


# ---------------------------------------------------------------- pooling and ticks


def pool(a: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max over ``f``-square blocks of the last two axes (edge blocks are smaller)."""
    *lead, q, k = a.shape
    nq, nk = -(-q // f), -(-k // f)
    pad = np.full((*lead, nq * f, nk * f), np.nan, np.float32)
    pad[..., :q, :k] = a
    blocks = pad.reshape(*lead, nq, f, nk, f)
    return np.nanmean(blocks, axis=(-3, -1)), np.nanmax(blocks, axis=(-3, -1))


def tick_step(positions: int, units_per_pos: float, label_units: float) -> int:
    """The smallest power-of-two step whose labels do not collide."""
    step = 1
    while step * units_per_pos < label_units and step < positions:
        step *= 2
    return step
