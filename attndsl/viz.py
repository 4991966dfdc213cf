"""Pictures of attention masks: exact mask grids, probabilities of a run, block (tile)
classification, rendered as compact Unicode text or as a PNG (Pillow, the ``viz`` extra).

``draw`` is what ``attndsl viz`` does; the smaller functions are its parts. Grids are
``[heads, q_len, k_len]`` arrays: bool for masks, float for probabilities. Query rows are
absolute positions ``q_start + i`` (``q_start`` is ``past_len`` in self-attention).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import AttnDSLError, InputError, did_you_mean
from .features import nodes as mn
from .features.registry import cache_inputs, cache_past_len, rule
from .features.text import format_mask
from .inputs import random_inputs
from .ir.nodes import Block, Model, Output
from .limits import check_cells
from .masks.eval import eval_mask
from .viz_layout import panel_groups, pool, tick_step

INPUTS_SEED = 0

# ---------------------------------------------------------------- grids


def pick_block(model: Model, block: str | Block | None = None) -> Block:
    """The named block (default: the first one)."""
    if isinstance(block, Block):
        return block
    if block is None:
        return model.blocks[0]
    names = [b.name for b in model.blocks]
    if block not in names:
        raise AttnDSLError(f"no block '{block}' in model '{model.name}' (blocks: "
                           f"{', '.join(names)})", hint=did_you_mean(block, names))
    return model.block(block)


def default_length(block: Block) -> int:
    """A length that shows the pattern: four times the widest span in the mask (window
    width, chunk, stride...), as a power of two between 16 and 512."""
    sizes = [0] + [rule("viz", node)(node) for node in mn.walk(block.mask)]
    return min(512, max(16, 1 << math.ceil(math.log2(max(1, 4 * max(sizes))))))


def grid_lengths(model: Model, block: str | Block | None = None, q_len: int | None = None,
                 k_len: int | None = None, past_len: int = 0) -> tuple[int, int]:
    """Query and total key lengths of a picture: given, else the spec's fixed sizes, else
    ``default_length``. Self-attention has ``k_len = past_len + q_len``."""
    b = pick_block(model, block)
    if past_len < 0 or (past_len and not b.cache):
        raise AttnDSLError(f"block '{b.name}' has no KV cache; past_len must be 0")
    if q_len is None:
        q_len = model.static_lens(b)[0] or default_length(b)
    if b.self_attention:
        if k_len is not None and k_len != past_len + q_len:
            raise AttnDSLError(f"block '{b.name}' is self-attention: k_len is past_len + q_len "
                               f"= {past_len + q_len}, not {k_len}")
        k_len = past_len + q_len
    elif k_len is None:
        k_len = past_len + (model.static_lens(b)[1] or q_len)
    if q_len < 1 or k_len < 1:
        raise AttnDSLError(f"lengths must be positive (q_len {q_len}, k_len {k_len})")
    check_cells(model, b, q_len, k_len, "the picture of the mask", heads=b.heads)
    return q_len, k_len


def needs_inputs(block: Block) -> tuple[str, ...]:
    """The graph inputs the block's mask reads (padding, document, mask(m))."""
    return mn.input_names(block.mask)


def example_inputs(model: Model, block: str | Block | None, q_len: int, k_len: int,
                   past_len: int = 0, seed: int = INPUTS_SEED) -> dict[str, np.ndarray]:
    """Inputs sized for this picture: padding lengths cut the last quarter of the keys
    (``padding_length``), document ids and bool masks are random
    (``attndsl.inputs.random_inputs``)."""
    b = pick_block(model, block)
    lens = {model.stream_dims(b.query)[1]: q_len, model.stream_dims(b.key)[1]: k_len - past_len}
    dims = tuple(dataclasses.replace(d, size=lens.get(d.name, d.size)) for d in model.dims)
    out = random_inputs(dataclasses.replace(model, dims=dims), seed=seed, past_len=past_len)
    for name in _length_inputs(b):
        out[name] = np.full_like(out[name], padding_length(k_len))
    return out


def _length_inputs(block: Block) -> set[str]:
    """The [batch] length inputs the block's mask reads (padding(len))."""
    return {name for node in mn.walk(block.mask)
            for name, role in rule("inputs", node)(node) if role == "lengths"}


def padding_length(k_len: int) -> int:
    """The example length of ``padding(len)``: three quarters of the keys, rounded up."""
    return -(-3 * k_len // 4)


def inputs_note(block: Block, k_len: int) -> str:
    """How ``example_inputs`` filled the inputs a mask reads, for a picture's title."""
    parts = []
    lengths = _length_inputs(block)
    for name in needs_inputs(block):
        pad = name in lengths
        parts.append(f"{name} = {padding_length(k_len)}" if pad else f"{name} random")
    return f"example inputs: {', '.join(parts)} (seed {INPUTS_SEED})" if parts else ""


def mask_grid(model: Model, block: str | Block | None = None, q_len: int | None = None,
              k_len: int | None = None, past_len: int = 0,
              inputs: Mapping[str, np.ndarray] | None = None, batch: int = 0) -> np.ndarray:
    """The exact mask of a block, bool ``[heads, q_len, k_len]`` (True = may attend), for
    batch row ``batch``. Masks that read inputs use ``inputs``, else ``example_inputs``."""
    b = pick_block(model, block)
    q_len, k_len = grid_lengths(model, b, q_len, k_len, past_len)
    if inputs is None and needs_inputs(b):
        inputs = example_inputs(model, b, q_len, k_len, past_len)
    missing = [name for name in needs_inputs(b) if name not in (inputs or {})]
    if missing:
        raise InputError(f"the mask of block '{b.name}' reads input(s) {', '.join(missing)}")
    q_pos = (past_len if b.self_attention else 0) + np.arange(q_len)
    m = eval_mask(b.mask, b.heads, q_pos, np.arange(k_len), 1, inputs)
    m = np.broadcast_to(m, (m.shape[0], b.heads, q_len, k_len))
    if not 0 <= batch < m.shape[0]:
        raise InputError(f"batch index {batch} is out of range (batch {m.shape[0]})")
    return np.array(m[batch if m.shape[0] > 1 else 0])


def run_lengths(model: Model, block: str | Block | None,
                inputs: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """(q_len, k_len, past_len) of a run with these inputs."""
    b = pick_block(model, block)
    try:
        q_len = int(np.shape(inputs[model.root_stream(b.query)])[1])
        new_k = int(np.shape(inputs[model.root_stream(b.key)])[1])
        past = cache_past_len(b, {n: np.asarray(inputs[n]) for n in cache_inputs(b, 0, 0)}
                              if b.cache else {})
    except KeyError as e:
        raise InputError(f"the inputs have no '{e.args[0]}'") from None
    return q_len, past + new_k, past


def prob_grid(model: Model, block: str | Block | None, inputs: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray] | None = None, batch: int = 0) -> np.ndarray:
    """Attention probabilities of a run (the numpy reference), float ``[heads, q_len, k_len]``
    for batch row ``batch``; weights default to the spec's (file or seeded)."""
    from .reference import run_reference
    from .weights import load_weights

    b = pick_block(model, block)
    names = [i.name for i in model.inputs]
    names += [name for x in model.blocks if x.cache for name in cache_inputs(x, 0, 0)]
    missing = [name for name in names if name not in inputs]
    if missing:
        raise InputError(f"the inputs lack {', '.join(missing)}")
    probe = dataclasses.replace(model, outputs=(Output("weights", b.name, "weights"),))
    try:
        p = run_reference(probe, load_weights(model) if weights is None else weights, inputs)
    except (ValueError, IndexError) as e:
        raise InputError(f"the inputs do not fit the model: {e}") from None
    p = p["weights"]
    if b.static_cache:  # the buffer's slots past the written ones: probability 0, not keys
        p = p[..., :cache_past_len(b, inputs) + int(np.shape(inputs[model.root_stream(b.key)])[1])]
    if not 0 <= batch < p.shape[0]:
        raise InputError(f"batch index {batch} is out of range (batch {p.shape[0]})")
    return p[batch]


def tile_classes(grid: np.ndarray, tile: int) -> np.ndarray:
    """Exact classes of ``tile``-square blocks of a grid, int8 ``[heads, nqt, nkt]``:
    0 empty, 1 partial, 2 full (edge tiles count only their real cells)."""
    mean = pool(np.asarray(grid, bool).astype(np.float32), tile)[0]
    return np.where(mean == 0, 0, np.where(mean == 1, 2, 1)).astype(np.int8)


def block_tiles(model: Model, block: str | Block | None, q_len: int, k_len: int, tile: int,
                past_len: int = 0) -> np.ndarray:
    """The compiler's tile classes (``masks.analysis.classify_tiles``) for every head,
    int8 ``[heads, nqt, nkt]``: FULL and EMPTY are exact, PARTIAL may be conservative."""
    from .masks.analysis import classify_tiles

    b = pick_block(model, block)
    t = classify_tiles(b.mask, b.heads, q_len, k_len, tile, past_len=past_len,
                       self_attention=b.self_attention)
    return np.broadcast_to(np.asarray(t, np.int8), (b.heads, *np.shape(t)[1:])).copy()


def auto_tile(q_len: int, k_len: int) -> int:
    """A power-of-two tile that gives about eight tiles along the longer axis."""
    n = max(q_len, k_len)
    return 1 if n < 16 else 1 << round(math.log2(n / 8))


# ---------------------------------------------------------------- heads


def parse_heads(text: str, heads: int) -> tuple[int, ...]:
    """``"0,2-3"``, ``"0..3"`` or ``"5"`` as sorted head indices, checked against ``heads``."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, sep, hi = part.replace("..", "-").partition("-")
        try:
            a, b = int(lo), int(hi if sep else lo)
        except ValueError:
            raise AttnDSLError(f"bad head selection '{text}'", hint="e.g. 0,2-3 or 0..3") from None
        if b < a:
            raise AttnDSLError(f"empty head range '{part}'")
        if not 0 <= a <= b < heads:
            raise AttnDSLError(f"heads {part} out of range: the block has {heads} heads "
                               f"(0..{heads - 1})")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


# ---------------------------------------------------------------- text

_CELL = 32  # text: up to this many positions per axis, two characters per position
_HALF = 64  # beyond: half-block characters (one column, half a line each), pooled to 64
_SHADES = ("░░", "▒▒", "▓▓", "██")


def _shade(level: float) -> str:
    return _SHADES[min(3, int(level * 4))]


def _text_cells(values: np.ndarray, probs: bool, vmax: float) -> tuple[list[str], int, int]:
    """Rows of characters for one [q, k] picture, plus positions per column and per line."""
    q, k = values.shape
    if probs:
        f = max(1, -(-max(q, k) // _CELL))
        peak = pool(values, f)[1]
        rows = ["".join("· " if v == 0 else _shade(math.sqrt(v / vmax)) for v in r)
                for r in peak]
        return rows, f, f
    if max(q, k) <= _CELL:
        return ["".join("██" if v else "· " for v in r) for r in values], 1, 1
    f = max(1, -(-max(q, k) // _HALF))
    on = pool(values.astype(np.float32), f)[1] > 0
    if on.shape[0] % 2:
        on = np.concatenate([on, np.zeros((1, on.shape[1]), bool)])
    chars = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): "·"}
    rows = ["".join(chars[bool(t), bool(b)] for t, b in zip(on[i], on[i + 1], strict=True))
            for i in range(0, on.shape[0], 2)]
    return rows, f, 2 * f


def _text_panel(label: str, rows: list[str], per_line: int, k_len: int,
                q_start: int, q_len: int, cols_per_pos: float) -> list[str]:
    """A labelled panel: k ticks on top, absolute q positions on the left."""
    gutter = max(4, len(str(q_start + q_len - 1)) + 1)
    width = len(rows[0])
    step = tick_step(k_len, cols_per_pos, len(str(k_len - 1)) + 1)
    ticks = [" "] * (width + 8)
    for pos in range(0, k_len, step):
        col = int(pos * cols_per_pos)
        ticks[col:col + len(str(pos))] = str(pos)
    top = "q\\k ".rjust(gutter) + "".join(ticks).rstrip()
    qstep = max(step, per_line)
    lines = [label, top[:gutter + width + 4]]
    for i, row in enumerate(rows):
        first, last = q_start + i * per_line, q_start + (i + 1) * per_line - 1
        tick = next((p for p in range(first, last + 1) if p % qstep == 0), None)
        if i == 0:
            tick = first
        lines.append(("" if tick is None else str(tick)).rjust(gutter - 1) + " " + row)
    return lines


def _tiles_text(tiles: np.ndarray, tile: int) -> list[str]:
    marks = {0: "· ", 1: "▒▒", 2: "██"}
    rows = ["".join(marks[int(c)] for c in r) for r in tiles]
    return [f"tiles {tile}×{tile}", ""] + rows


def _flow(panels: list[list[str]], width: int) -> str:
    """Panels side by side, wrapped at ``width`` columns."""
    out: list[str] = []
    row: list[list[str]] = []
    used = 0
    for p in panels + [None]:
        w = 0 if p is None else max(len(s) for s in p)
        if row and (p is None or used + 3 + w > width):
            widths = [max(len(s) for s in q) for q in row]
            height = max(len(q) for q in row)
            for i in range(height):
                cells = [(q[i] if i < len(q) else "").ljust(wq)
                         for q, wq in zip(row, widths, strict=True)]
                out.append("   ".join(cells).rstrip())
            out.append("")
            row, used = [], 0
        if p is not None:
            row.append(p)
            used += w + (3 if used else 0)
    return "\n".join(out).rstrip("\n") + "\n"


def render_text(grid: np.ndarray, heads: Sequence[int] | None = None, *,
                tiles: np.ndarray | None = None, tile: int = 0, probs: bool = False,
                q_start: int = 0, title: str = "", width: int = 100) -> str:
    """Compact Unicode picture: one panel per group of identical heads (with its tile map
    when ``tiles`` [heads, nqt, nkt] is given), a legend, wrapped at ``width`` columns."""
    grid = np.asarray(grid)
    q_len, k_len = grid.shape[1:]
    vmax = float(grid.max()) if probs and grid.max() > 0 else 1.0
    panels: list[list[str]] = []
    zoom = 1
    for label, _, i in panel_groups(grid, heads, tiles):
        rows, per_col, per_line = _text_cells(grid[i], probs, vmax)
        zoom = per_col
        cpp = len(rows[0]) / -(-k_len // per_col) / per_col
        panels.append(_text_panel(label, rows, per_line, k_len, q_start, q_len, cpp))
        if tiles is not None:
            panels.append(_tiles_text(tiles[i], tile))
    if probs:
        legend = f"·  masked   ░▒▓█ probability (sqrt scale, █ ≈ {vmax:.3g})"
    else:
        legend = "█ allowed   · masked" + ("" if max(q_len, k_len) <= _CELL else " (half blocks)")
    if zoom > 1:
        legend += f"; 1 cell = {zoom}×{zoom} positions ({'max' if probs else 'any allowed'})"
    if tiles is not None:
        legend += "   tiles: ██ full  ▒▒ partial  · empty"
    head = [title] if title else []
    return "\n".join(head + [legend, ""]) + "\n" + _flow(panels, width)


# ---------------------------------------------------------------- PNG and the command


def render_png(grid: np.ndarray, path: str | Path, title: str = "",
               heads: Sequence[int] | None = None, *, tiles: np.ndarray | None = None,
               tile: int = 0, probs: bool = False, q_start: int = 0) -> list:
    """Draw ``grid`` to a PNG file (needs Pillow: ``pip install 'attndsl[viz]'``); returns
    the drawn panels (``viz_png.Panel``: label, heads, matrix box in pixels)."""
    try:
        from . import viz_png
    except ImportError as e:
        if not (e.name or "").startswith("PIL"):
            raise
        raise AttnDSLError("drawing a PNG needs Pillow",
                           hint="pip install 'attndsl[viz]' (or pip install pillow)") from None
    return viz_png.render_png(grid, path, title, heads, tiles=tiles, tile=tile, probs=probs,
                              q_start=q_start)


def draw(model: Model, block: str | Block | None = None, *,
         heads: str | Sequence[int] | None = None, length: int | None = None,
         past_len: int = 0, tiles: int | None = None,
         inputs: Mapping[str, np.ndarray] | None = None,
         weights: Mapping[str, np.ndarray] | None = None, batch: int = 0,
         out: str | Path | None = None, width: int = 100) -> str:
    """What ``attndsl viz`` does. Draws the mask of ``block`` at ``length`` queries (default:
    the spec's fixed length, else ``default_length``), or with ``inputs`` the probabilities
    of a run. ``heads``: a selection such as ``"0,2-3"``; ``tiles``: a tile size for the
    block classification (0 = automatic). Writes a PNG to ``out`` and returns a one-line
    summary, else returns the Unicode picture."""
    b = pick_block(model, block)
    if inputs is not None:
        if length is not None or past_len:
            raise AttnDSLError("the lengths of a run come from its inputs; drop --len/--past-len")
        q_len, k_len, past_len = run_lengths(model, b, inputs)
        grid = prob_grid(model, b, inputs, weights, batch)
        note = f"attention probabilities of a run with the given inputs (batch row {batch})"
    else:
        q_len, k_len = grid_lengths(model, b, length, None, past_len)
        grid = mask_grid(model, b, q_len, k_len, past_len)
        note = inputs_note(b, k_len)
    if isinstance(heads, str):
        sel = parse_heads(heads, b.heads)
    else:
        sel = tuple(range(b.heads)) if heads is None else tuple(heads)
        if not sel or not all(0 <= h < b.heads for h in sel):
            raise AttnDSLError(f"heads {list(sel)}: the block has {b.heads} heads")
    cls = None
    tile = 0
    if tiles is not None:
        tile = tiles or auto_tile(q_len, k_len)
        cls = block_tiles(model, b, q_len, k_len, tile, past_len)[list(sel)]
    grid = grid[list(sel)]
    q_start = past_len if b.self_attention else 0
    span = (f"q {q_start}..{q_start + q_len - 1} x k 0..{k_len - 1}"
            + (f" (past_len {past_len})" if past_len else ""))
    title = f"{model.name}, block {b.name}: {format_mask(b.mask)}\n{span}"
    title += f"; {note}" if note else ""
    probs = inputs is not None
    if out is None:
        return render_text(grid, sel, tiles=cls, tile=tile, probs=probs, q_start=q_start,
                           title=title, width=width)
    panels = render_png(grid, out, title, sel, tiles=cls, tile=tile, probs=probs,
                        q_start=q_start)
    return f"wrote {out}: {len(panels)} panel(s), {span}"
