"""PNG pictures of mask and probability grids, drawn with Pillow (the ``viz`` extra).

Import through ``attndsl.viz.render_png``; this module needs Pillow at import time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fileio import open_atomic
from .viz_layout import panel_groups, pool, tick_step

BG = (255, 255, 255)
INK = (40, 40, 40)
FRAME = (120, 120, 120)
TILE_LINE = (175, 175, 175)
ALLOWED = (33, 102, 172)
MASKED = (236, 236, 236)
FULL = (46, 125, 50)
PARTIAL_MASKED = (253, 222, 170)
WRONG = (215, 48, 39)
# viridis at 0, 1/8, ..., 1
VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)], np.float32)

MATRIX = 384  # target side of a panel's matrix, pixels
MAX_CELL = 24
MAX_WIDTH = 1600
PAD, GAP = 16, 28


@dataclass(frozen=True)
class Panel:
    """One drawn panel: its label, the heads it shows and its matrix box (x0, y0, x1, y1)."""

    label: str
    heads: tuple[int, ...]
    box: tuple[int, int, int, int]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def _scale(q: int, k: int) -> tuple[int, int]:
    """(positions per cell, pixels per cell)."""
    n = max(q, k)
    if n <= 2 * MATRIX:
        return 1, max(1, min(MAX_CELL, round(MATRIX / n)))
    return math.ceil(n / MATRIX), 1


def _colormap(x: np.ndarray) -> np.ndarray:
    """Viridis for x in [0, 1] -> float RGB."""
    t = np.clip(x, 0, 1) * (len(VIRIDIS) - 1)
    i = np.minimum(t.astype(int), len(VIRIDIS) - 2)
    w = (t - i)[..., None]
    return VIRIDIS[i] * (1 - w) + VIRIDIS[i + 1] * w


def _mask_rgb(values: np.ndarray, tiles: np.ndarray | None, tile: int, f: int) -> np.ndarray:
    """Cell colours of a bool [q, k] grid (tile classes colour the cells), pooled by f."""
    on = values.astype(bool)
    if tiles is None:
        kinds = [(on, ALLOWED), (~on, MASKED)]
    else:
        q, k = values.shape
        cls = np.repeat(np.repeat(tiles, tile, 0), tile, 1)[:q, :k]
        kinds = [(on & (cls == 2), FULL), (on & (cls == 1), ALLOWED), (on & (cls == 0), WRONG),
                 (~on & (cls == 1), PARTIAL_MASKED), (~on & (cls == 0), MASKED),
                 (~on & (cls == 2), WRONG)]
    fracs = np.stack([pool(c.astype(np.float32), f)[0] for c, _ in kinds])
    if f > 1:  # keep a lone allowed cell visible: allowed colours weigh at least 60 %
        share = pool(on.astype(np.float32), f)[0]
        boost = np.where(share > 0, np.maximum(share, 0.6) / np.maximum(share, 1e-9), 1.0)
        rest = np.where(share < 1, (1 - share * boost) / np.maximum(1 - share, 1e-9), 0.0)
        half = len(kinds) // 2  # the first half of ``kinds`` are allowed cells
        fracs[:half] *= boost
        fracs[half:] *= rest
    return np.einsum("cqk,cx->qkx", fracs, np.array([c for _, c in kinds], np.float32))


def _prob_rgb(values: np.ndarray, vmax: float, f: int) -> np.ndarray:
    peak = pool(values, f)[1]
    rgb = _colormap(np.sqrt(peak / vmax))
    return np.where((peak > 0)[..., None], rgb, np.array(MASKED, np.float32))


def _matrix_image(rgb: np.ndarray, cell: int, tile_px: float) -> Image.Image:
    px = np.repeat(np.repeat(rgb, cell, 0), cell, 1)
    if cell >= 10:  # faint cell borders, so cells can be counted
        px[::cell] = px[::cell] * 0.8 + 51
        px[:, ::cell] = px[:, ::cell] * 0.8 + 51
    px = np.rint(px).astype(np.uint8)
    if tile_px >= 4:
        for axis in (0, 1):
            for t in np.arange(tile_px, px.shape[axis] - 0.5, tile_px):
                idx = int(round(t))
                if axis == 0:
                    px[idx, :] = TILE_LINE
                else:
                    px[:, idx] = TILE_LINE
    return Image.fromarray(px, "RGB")


def render_png(grid: np.ndarray, path: str | Path, title: str = "",
               heads: Sequence[int] | None = None, *, tiles: np.ndarray | None = None,
               tile: int = 0, probs: bool = False, q_start: int = 0) -> list[Panel]:
    """Draw ``grid`` [n, q, k] to a PNG: one labelled panel per group of identical slices
    (``heads`` names the head of each slice), q/k axes with ticks, tile classes and lines when
    ``tiles`` [n, nqt, nkt] is given, probabilities as a colormap. Returns the panels."""
    grid = np.asarray(grid)
    n_q, n_k = grid.shape[1:]
    f, cell = _scale(n_q, n_k)
    vmax = float(grid.max()) if probs and grid.max() > 0 else 1.0
    f_title, f_label, f_tick = _font(15), _font(13), _font(11)
    groups = panel_groups(grid, heads, tiles)
    mw, mh = -(-n_k // f) * cell, -(-n_q // f) * cell
    ppp = cell / f  # pixels per position
    step = max(tick_step(n_k, ppp, f_tick.getlength(str(n_k - 1)) + 10),
               tick_step(n_q, ppp, 16))
    gutter = int(max(f_tick.getlength(str(q_start + n_q - 1)), f_tick.getlength("q\\k"))) + 8
    pw, ph = gutter + mw + 4, 20 + 16 + mh
    ncols = max(1, min(len(groups), (MAX_WIDTH - 2 * PAD + GAP) // (pw + GAP)))
    nrows = -(-len(groups) // ncols)
    ncols = -(-len(groups) // nrows)  # balance the rows: 4 panels as 2 x 2, not 3 + 1
    title_lines = [t for t in title.split("\n") if t]
    top = PAD + 20 * len(title_lines) + (8 if title_lines else 0)
    legend = _legend(probs, vmax, tiles is not None, tile, f)
    legend_h = 48 if probs else 34
    width = max([2 * PAD + ncols * pw + (ncols - 1) * GAP,
                 2 * PAD + sum(_item_width(it, f_tick) + 18 for it in legend)]
                + [2 * PAD + int(f_title.getlength(t)) for t in title_lines])
    height = top + nrows * ph + (nrows - 1) * GAP + legend_h + PAD
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)
    for i, line in enumerate(title_lines):
        d.text((PAD, PAD + 20 * i), line, fill=INK, font=f_title)
    out: list[Panel] = []
    for n, (label, hs, idx) in enumerate(groups):
        x0 = PAD + (n % ncols) * (pw + GAP)
        y0 = top + (n // ncols) * (ph + GAP)
        mx, my = x0 + gutter, y0 + 36
        d.text((x0, y0), label, fill=INK, font=f_label)
        rgb = (_prob_rgb(grid[idx], vmax, f) if probs else
               _mask_rgb(grid[idx], None if tiles is None else tiles[idx], tile, f))
        img.paste(_matrix_image(rgb, cell, tile * ppp if tiles is not None else 0), (mx, my))
        d.rectangle((mx - 1, my - 1, mx + mw, my + mh), outline=FRAME)
        d.text((mx - 8, my - 4), "q\\k", fill=INK, font=f_tick, anchor="rb")
        for pos in range(0, n_k, step):
            x = mx + (pos + 0.5) * ppp
            d.line((x, my - 4, x, my - 2), fill=FRAME)
            d.text((x, my - 5), str(pos), fill=INK, font=f_tick, anchor="mb")
        for pos in range(q_start + (-q_start) % step, q_start + n_q, step):
            y = my + (pos - q_start + 0.5) * ppp
            d.line((mx - 4, y, mx - 2, y), fill=FRAME)
            d.text((mx - 6, y), str(pos), fill=INK, font=f_tick, anchor="rm")
        out.append(Panel(label, tuple(hs), (mx, my, mx + mw, my + mh)))
    _draw_legend(d, PAD, height - PAD - legend_h + 14, legend, f_tick)
    with open_atomic(path) as f:  # a Ctrl-C or a failure leaves no partial PNG
        img.save(f, format="PNG", optimize=True)
    return out


def _legend(probs: bool, vmax: float, tiles: bool, tile: int, f: int) -> list[tuple]:
    """Legend items: ("ramp", vmax), ("swatch", colour, text) and ("text", text)."""
    if probs:
        items: list[tuple] = [("ramp", vmax), ("text", "probability (sqrt scale)"),
                              ("swatch", MASKED, "masked")]
    elif tiles:
        items = [("swatch", FULL, "full tile"), ("swatch", ALLOWED, "allowed (partial tile)"),
                 ("swatch", PARTIAL_MASKED, "masked (partial tile)"),
                 ("swatch", MASKED, "empty tile")]
    else:
        items = [("swatch", ALLOWED, "allowed"), ("swatch", MASKED, "masked")]
    if tiles:
        items.append(("text", f"tiles {tile}x{tile}"))
    if f > 1:
        items.append(("text", f"1 pixel = {f}x{f} positions" + (" (max)" if probs else "")))
    return items


def _item_width(item: tuple, font) -> int:
    if item[0] == "ramp":
        return 160
    return int(font.getlength(item[-1])) + (16 if item[0] == "swatch" else 0)


def _draw_legend(d: ImageDraw.ImageDraw, x: int, y: int, items: list[tuple], font) -> None:
    for item in items:
        if item[0] == "ramp":
            ramp = np.rint(_colormap(np.sqrt(np.linspace(0, 1, 160)))).astype(int)
            for i, col in enumerate(ramp):
                d.line((x + i, y, x + i, y + 11), fill=tuple(int(c) for c in col))
            d.text((x, y + 14), "0", fill=INK, font=font)
            d.text((x + 160, y + 14), f"{item[1]:.3g}", fill=INK, font=font, anchor="ra")
        elif item[0] == "swatch":
            d.rectangle((x, y, x + 11, y + 11), fill=item[1], outline=FRAME)
            d.text((x + 16, y + 6), item[2], fill=INK, font=font, anchor="lm")
        else:
            d.text((x, y + 6), item[1], fill=INK, font=font, anchor="lm")
        x += _item_width(item, font) + 18
