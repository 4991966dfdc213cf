"""Mask pictures: exact grids, Unicode text, PNG files (Pillow), tiles and probabilities."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import one_block

from attndsl import viz, viz_layout
from attndsl.api import parse_spec
from attndsl.errors import AttnDSLError, InputError
from attndsl.inputs import random_inputs
from attndsl.masks.eval import eval_mask
from attndsl.reference import run_reference
from attndsl.weights import load_weights


def spec(mask: str, heads: int = 4, seq: str | int = "dynamic", extra: str = ""):
    """A one-block spec with ``mask`` (and ``extra`` settings lines) over ``x`` and ``lengths``."""
    return one_block(f"    heads: {heads}\n    mask: \"{mask}\"{extra}", name="demo", seq=seq,
                     inputs="  lengths: {shape: [batch], dtype: int64}",
                     outputs="y: attn\n  p: attn.weights", path="demo.yaml")


GEMMA = "causal & (heads(0..1) & sliding(4) | heads(2, 3))"

CAUSAL_4 = """\
█ allowed   · masked

heads 0-3
q\\k 0 1 2 3
  0 ██· · ·
  1 ████· ·
  2 ██████·
  3 ████████
"""


# ---------------------------------------------------------------- grids


def test_mask_grid_is_the_exact_mask():
    m = spec("window(2, 1) | global(5) | heads(3)")
    grid = viz.mask_grid(m, "attn", 12)
    want = eval_mask(m.blocks[0].mask, 4, np.arange(12), np.arange(12))
    assert grid.dtype == bool and grid.shape == (4, 12, 12)
    assert np.array_equal(grid, np.broadcast_to(want, (1, 4, 12, 12))[0])
    assert grid[3].all() and not grid[0].all()


def test_lengths_defaults_and_checks():
    assert viz.grid_lengths(spec("causal")) == (16, 16)
    assert viz.grid_lengths(spec("sliding(64)")) == (256, 256)
    assert viz.grid_lengths(spec("window(8, 8) | global(0)")) == (128, 128)
    assert viz.grid_lengths(spec("causal", seq=24)) == (24, 24)
    with pytest.raises(AttnDSLError, match="no KV cache"):
        viz.grid_lengths(spec("causal"), past_len=3)
    with pytest.raises(AttnDSLError, match="self-attention"):
        viz.grid_lengths(spec("causal"), q_len=4, k_len=6)


CACHED = """
attndsl: 1
name: dec
dims: {batch: dynamic, seq: dynamic, mem: 12, d_model: 32}
inputs:
  x: [batch, seq, d_model]
  enc: [batch, mem, d_model]
blocks:
  self: {query: x, heads: 2, mask: "causal & sliding(3)", cache: true}
  cross: {query: self, key_value: enc, heads: 2, mask: "window(2, 2) | heads(1)"}
outputs: {y: cross}
"""


def test_past_len_and_cross_attention_positions():
    m = parse_spec(CACHED, "dec.yaml")
    grid = viz.mask_grid(m, "self", 4, past_len=6)
    assert grid.shape == (2, 4, 10)
    q = 6 + np.arange(4)[:, None]
    k = np.arange(10)[None, :]
    assert np.array_equal(grid[0], (k <= q) & (q - k < 3))
    assert viz.mask_grid(m, "cross", 5).shape == (2, 5, 12)  # k_len: the fixed mem dim
    text = viz.draw(m, "self", length=4, past_len=6)
    assert "q 6..9 x k 0..9 (past_len 6)" in text
    assert "\n  6 · · · · ██████· · ·\n" in text  # rows carry absolute positions


def test_unknown_block_suggests_a_name():
    with pytest.raises(AttnDSLError) as e:
        viz.mask_grid(spec("causal"), "atn")
    assert "did you mean 'attn'" in str(e.value)


def test_input_masks_use_example_inputs():
    m = spec("causal & padding(lengths)")
    grid = viz.mask_grid(m, None, 10)
    k = np.arange(10)
    assert np.array_equal(grid[0, -1], k < 8)  # padding keeps 3/4 of the keys
    assert "example inputs: lengths = 8 (seed 0)" in viz.draw(m, length=10)
    docs = parse_spec("""
attndsl: 1
name: packed
dims: {batch: dynamic, seq: dynamic, d_model: 32}
inputs:
  x: [batch, seq, d_model]
  doc: {shape: [batch, seq], dtype: int64}
blocks:
  attn: {query: x, heads: 2, mask: "causal & document(doc)"}
outputs: {y: attn}
""", "packed.yaml")
    ids = viz.example_inputs(docs, None, 12, 12)["doc"][0]
    want = (ids[:, None] == ids[None, :]) & np.tri(12, dtype=bool)
    assert np.array_equal(viz.mask_grid(docs, None, 12)[1], want)
    assert "example inputs: doc random (seed 0)" in viz.draw(docs, length=12)
    given = {"lengths": np.array([3, 9])}
    assert np.array_equal(viz.mask_grid(m, None, 10, inputs=given, batch=1)[0, -1], k < 9)
    with pytest.raises(InputError, match="batch index"):
        viz.mask_grid(m, None, 10, inputs=given, batch=2)


def test_heads_selection_and_labels():
    assert viz.parse_heads("0,2-3", 4) == (0, 2, 3)
    assert viz.parse_heads("1..2", 4) == (1, 2)
    assert viz.parse_heads("3", 4) == (3,)
    for bad in ("4", "1-5", "x", "2-1"):
        with pytest.raises(AttnDSLError):
            viz.parse_heads(bad, 4)
    assert viz_layout.head_label([0]) == "head 0"
    assert viz_layout.head_label([0, 1, 2, 3]) == "heads 0-3"
    assert viz_layout.head_label([4, 0, 1]) == "heads 0-1, 4"


def test_group_heads_merges_identical_patterns():
    grid = viz.mask_grid(spec(GEMMA), None, 8)
    assert viz_layout.group_heads(grid) == [[0, 1], [2, 3]]
    tiles = np.zeros((4, 1, 1), np.int8)
    tiles[1] = 1
    assert viz_layout.group_heads(grid, tiles) == [[0], [1], [2, 3]]


# ---------------------------------------------------------------- tiles


def test_tile_classes_exact():
    grid = viz.mask_grid(spec("causal"), None, 8)
    assert viz.tile_classes(grid, 4)[0].tolist() == [[1, 0], [2, 1]]
    # edge tiles count only real cells: 6 x 6 with tile 4 -> the (1, 0) tile is 2 x 4, full
    assert viz.tile_classes(grid[:, :6, :6], 4)[0].tolist() == [[1, 0], [2, 1]]


@pytest.mark.parametrize("mask", ["causal", GEMMA, "window(3, 3) | global(0, 9)",
                                  "chunk(5) & causal", "random(1, block=4, seed=2) | causal"])
def test_compiler_tiles_never_contradict_the_grid(mask):
    m = spec(mask, seq=20)
    grid = viz.mask_grid(m)
    compiler = viz.block_tiles(m, None, 20, 20, 4)
    exact = viz.tile_classes(grid, 4)
    assert compiler.shape == exact.shape == (4, 5, 5)
    decided = compiler != 1
    assert np.array_equal(compiler[decided], exact[decided])


def test_auto_tile():
    assert viz.auto_tile(8, 8) == 1
    assert viz.auto_tile(64, 64) == 8
    assert viz.auto_tile(1000, 1000) == 128


# ---------------------------------------------------------------- text


def test_causal_text_exact():
    grid = viz.mask_grid(spec("causal"), None, 4)
    assert viz.render_text(grid) == CAUSAL_4
    text = viz.draw(spec("causal"), length=4)
    assert text == "demo, block attn: causal\nq 0..3 x k 0..3\n" + CAUSAL_4


GEMMA_8_TILES = """\
demo, block attn: causal & (heads(0, 1) & sliding(4) | heads(2, 3))
q 0..7 x k 0..7
█ allowed   · masked   tiles: ██ full  ▒▒ partial  · empty

heads 0-1              tiles 4×4   heads 2-3              tiles 4×4
q\\k 0 1 2 3 4 5 6 7                q\\k 0 1 2 3 4 5 6 7
  0 ██· · · · · · ·    ▒▒·           0 ██· · · · · · ·    ▒▒·
  1 ████· · · · · ·    ▒▒▒▒          1 ████· · · · · ·    ██▒▒
  2 ██████· · · · ·                  2 ██████· · · · ·
  3 ████████· · · ·                  3 ████████· · · ·
  4 · ████████· · ·                  4 ██████████· · ·
  5 · · ████████· ·                  5 ████████████· ·
  6 · · · ████████·                  6 ██████████████·
  7 · · · · ████████                 7 ████████████████
"""


def test_text_groups_heads_side_by_side_with_tile_maps():
    assert viz.draw(spec(GEMMA), length=8, tiles=4) == GEMMA_8_TILES


def test_text_narrow_width_stacks_panels():
    text = viz.draw(spec(GEMMA), length=8, heads="0,2")
    wide = [s for s in text.splitlines() if s.startswith("head ")]
    assert wide[0].split() == ["head", "0", "head", "2"]
    narrow = viz.render_text(viz.mask_grid(spec(GEMMA), None, 8)[[0, 2]], [0, 2], width=30)
    assert [s for s in narrow.splitlines() if s.startswith("head")] == ["head 0", "head 2"]


def test_half_blocks_and_downsampling():
    grid = viz.mask_grid(spec("causal"), None, 64)
    lines = viz.render_text(grid).splitlines()
    assert "(half blocks)" in lines[0]
    body = lines[4:]
    assert len(body) == 32 and all(len(s) == 4 + 64 for s in body)
    assert body[0][4:] == "█▄" + "·" * 62
    assert body[-1][4:] == "█" * 63 + "▄"
    big = viz.render_text(viz.mask_grid(spec("causal & sliding(4)"), None, 256))
    assert "1 cell = 4×4 positions (any allowed)" in big
    assert max(len(s) for s in big.splitlines()) <= 100


# ---------------------------------------------------------------- probabilities

PADDED = "causal & sliding(8) & padding(lengths)"


def test_prob_grid_is_the_reference_weights():
    m = spec(PADDED, seq=12, extra="\n    score: [alibi]")
    inputs = random_inputs(m, seed=3)
    p = viz.prob_grid(m, "attn", inputs, batch=1)
    want = run_reference(m, load_weights(m), inputs)["p"][1]
    np.testing.assert_allclose(p, want)
    allowed = viz.mask_grid(m, None, 12, inputs=inputs, batch=1)
    assert np.all(p[~allowed] == 0)
    rows = allowed.any(-1)
    np.testing.assert_allclose(p.sum(-1)[rows], 1.0)
    with pytest.raises(InputError, match="lack lengths"):
        viz.prob_grid(m, "attn", {"x": inputs["x"]})


def test_probability_text():
    m = spec(PADDED, seq=12)
    inputs = random_inputs(m, seed=3)
    text = viz.draw(m, inputs=inputs, heads="1")
    assert "attention probabilities of a run" in text
    assert "░▒▓█ probability (sqrt scale" in text
    cells = "".join(s[4:] for s in text.splitlines()[6:])
    assert "█" in cells and "·" in cells and set(cells) <= set(" 0123456789·░▒▓█")
    with pytest.raises(AttnDSLError, match="come from its inputs"):
        viz.draw(m, inputs=inputs, length=12)


# ---------------------------------------------------------------- PNG


def _colours(img, box) -> set[tuple[int, int, int]]:
    x0, y0, x1, y1 = box
    return {tuple(c) for c in np.asarray(img)[y0:y1, x0:x1].reshape(-1, 3)}


def _cell(img, box, n, q, k) -> tuple[int, int, int]:
    """Colour at the centre of cell (q, k) of an n x n panel drawn at one position per cell."""
    x0, y0, x1, _ = box
    size = (x1 - x0) / n
    return tuple(np.asarray(img)[int(y0 + (q + 0.5) * size), int(x0 + (k + 0.5) * size)])


def test_png_causal(tmp_path):
    image = pytest.importorskip("PIL.Image")
    from attndsl import viz_png as vp

    out = tmp_path / "mask.png"
    panels = viz.render_png(viz.mask_grid(spec("causal"), None, 16), out, "causal")
    img = image.open(out).convert("RGB")
    assert 300 < img.width < 1000 and 300 < img.height < 1000
    assert [p.label for p in panels] == ["heads 0-3"]
    box = panels[0].box
    assert box[2] - box[0] == box[3] - box[1] == 16 * 24
    assert _cell(img, box, 16, 15, 0) == vp.ALLOWED
    assert _cell(img, box, 16, 0, 15) == vp.MASKED
    assert _cell(img, box, 16, 7, 7) == vp.ALLOWED and _cell(img, box, 16, 7, 8) == vp.MASKED


def test_png_panels_per_group_of_heads(tmp_path):
    image = pytest.importorskip("PIL.Image")
    out = tmp_path / "gemma.png"
    msg = viz.draw(spec(GEMMA), length=32, out=out)
    assert msg == f"wrote {out}: 2 panel(s), q 0..31 x k 0..31"
    four = viz.render_png(viz.mask_grid(spec("heads(0) | heads(1) & causal | heads(2) & "
                                             "sliding(3)"), None, 32), tmp_path / "f.png")
    assert [p.heads for p in four] == [(0,), (1,), (2,), (3,)]
    boxes = [p.box for p in four]
    assert boxes[0][1] == boxes[1][1] and boxes[2][1] > boxes[0][3]  # 2 x 2, not 3 + 1
    img = image.open(tmp_path / "f.png")
    assert all(b[2] <= img.width and b[3] <= img.height for b in boxes)


def test_png_tiles(tmp_path):
    image = pytest.importorskip("PIL.Image")
    from attndsl import viz_png as vp

    out = tmp_path / "tiles.png"
    m = spec("causal & sliding(8)")
    grid = viz.mask_grid(m, None, 16)
    panels = viz.render_png(grid, out, tiles=viz.block_tiles(m, None, 16, 16, 4), tile=4)
    img = image.open(out).convert("RGB")
    box = panels[0].box
    colours = _colours(img, box)
    assert {vp.FULL, vp.ALLOWED, vp.PARTIAL_MASKED, vp.MASKED, vp.TILE_LINE} <= colours
    assert vp.WRONG not in colours
    assert _cell(img, box, 16, 6, 1) == vp.FULL  # tile (1, 0): q 4..7 x k 0..3, all allowed
    assert _cell(img, box, 16, 0, 3) == vp.PARTIAL_MASKED
    assert _cell(img, box, 16, 15, 0) == vp.MASKED  # an empty tile


def test_png_downsamples_long_sequences(tmp_path):
    image = pytest.importorskip("PIL.Image")
    from attndsl import viz_png as vp

    out = tmp_path / "long.png"
    panels = viz.render_png(viz.mask_grid(spec("causal & sliding(4) | global(0)"), None, 2048),
                            out)
    x0, y0, x1, y1 = panels[0].box
    assert x1 - x0 == y1 - y0 == 342  # 6 x 6 positions per pixel
    img = image.open(out).convert("RGB")
    assert img.width < 800 and img.height < 800
    assert vp.MASKED in _colours(img, panels[0].box)
    diagonal = np.asarray(img)[y0 + 100, x0 + 100]
    assert tuple(diagonal) != vp.MASKED  # 4 of 36 cells allowed still shows


def test_png_probabilities(tmp_path):
    image = pytest.importorskip("PIL.Image")
    from attndsl import viz_png as vp

    m = spec(PADDED, seq=12)
    inputs = random_inputs(m, seed=3)
    out = tmp_path / "probs.png"
    viz.draw(m, inputs=inputs, out=out, heads="0")
    grid = viz.prob_grid(m, None, inputs)[:1]
    panels = viz.render_png(grid, out, probs=True)
    img = image.open(out).convert("RGB")
    box = panels[0].box
    colours = _colours(img, box)
    assert vp.MASKED in colours and len(colours) > 10  # a colormap, not two colours
    assert _cell(img, box, 12, 0, 0) == tuple(vp.VIRIDIS[-1].astype(int))  # p = 1: the top


def test_missing_pillow_gives_an_install_hint(tmp_path, monkeypatch):
    import attndsl

    monkeypatch.delitem(sys.modules, "attndsl.viz_png", raising=False)
    monkeypatch.delattr(attndsl, "viz_png", raising=False)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(AttnDSLError) as e:
        viz.render_png(np.ones((1, 2, 2), bool), tmp_path / "x.png")
    assert "pip install 'attndsl[viz]'" in str(e.value)
