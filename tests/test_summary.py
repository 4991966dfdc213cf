"""``attndsl check``'s numbers: density, tile counts and FLOPs against direct counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import attndsl
from attndsl import summary
from attndsl.errors import AttnDSLError
from attndsl.inputs import random_inputs
from attndsl.masks.eval import eval_mask

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "examples").glob("*.yaml")) + sorted(
    p for p in (ROOT / "specs").iterdir() if p.suffix in (".yaml", ".attn"))


def _dense(model, block, sizes, past_len, seed):
    """The block's full [batch, heads, q_len, k_len] mask, evaluated in one piece."""
    info = {s.name: s for s in summary.stream_shapes(model, sizes)}
    batch, q_len = info[block.query].size[:2]
    past = past_len if block.cache else 0
    k_len = info[block.key].size[1] + past
    inputs = random_inputs(model, sizes, seed=seed, past_len=past_len)
    q_pos = (past if block.self_attention else 0) + np.arange(q_len)
    m = eval_mask(block.mask, block.heads, q_pos, np.arange(k_len), batch, inputs)
    return np.broadcast_to(m, (batch, block.heads, q_len, k_len))


def _naive_tiles(allowed, tile):
    """Full / partial / empty (head, tile) pairs of batch row 0, cell by cell."""
    out = {"full": 0, "partial": 0, "empty": 0}
    _, h, sq, sk = allowed.shape
    for j in range(h):
        for q0 in range(0, sq, tile):
            for k0 in range(0, sk, tile):
                t = allowed[0, j, q0:q0 + tile, k0:k0 + tile]
                out["full" if t.all() else "partial" if t.any() else "empty"] += 1
    return out["full"], out["partial"], out["empty"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_counts_match_a_dense_evaluation(path):
    model = attndsl.load_spec(path)
    sizes = summary.check_sizes(model, {}, default_len=50, default_batch=2)
    s = summary.summarize(model, sizes, past_len=3, seed=1, tile=16)
    for info in s.blocks:
        dense = _dense(model, info.block, sizes, 3, 1)
        assert info.attended == int(dense.sum())
        assert info.cells == dense.size
        b = info.block
        assert info.attn_flops == 2 * (b.head_dim + b.v_head_dim) * int(dense.sum())
        full, partial, empty = _naive_tiles(dense, 16)
        assert sum(info.tiles) == full + partial + empty
        # compile-time classes: FULL and EMPTY are never wrong, unsure tiles are PARTIAL
        assert info.tiles[0] <= full and info.tiles[2] <= empty
        if not info.inputs_used:
            assert info.tiles == (full, partial, empty)


def test_flops_of_gpt2():
    model = attndsl.load_spec(ROOT / "examples" / "gpt2_causal.yaml")
    (info,) = summary.summarize(model, {"seq": 64}).blocks
    # q, k, v and o projections: 4 matmuls of [64, 192] x [192, 192]
    assert info.proj_flops == 4 * 2 * 64 * 192 * 192
    # 12 heads, causal: 64*65/2 attended keys per head, QK and PV of 16 each
    assert info.attended == 12 * 64 * 65 // 2
    assert info.attn_flops == 2 * (16 + 16) * 12 * 64 * 65 // 2


def test_sizes_are_checked():
    model = attndsl.load_spec(ROOT / "specs" / "bigbird.attn")
    with pytest.raises(AttnDSLError, match="fixed at 64"):
        summary.check_sizes(model, {"seq": 32})
    assert summary.check_sizes(model, {"seq": 64}) == {"batch": 1, "seq": 64, "d_model": 128}


def test_graph_input_names():
    model = attndsl.load_spec(ROOT / "examples" / "mistral_block.attn")
    assert summary.graph_input_names(model) == ["x", "attn.past_key", "attn.past_value"]
