"""Block-sparse lowering (band, query chunks, static tile lists) against the numpy reference.

Each case compiles one model with ``sparse="block"`` (small tiles, so that short sequences
span several tiles, a partial last tile and keys beyond both ends), checks that the plan
picked the expected strategy, and runs the same model at several lengths (dynamic dims),
batch sizes and past lengths in ONNX Runtime against ``run_reference``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_against_reference, one_block

from attndsl.errors import ErrorCollector, LoweringError
from attndsl.features import nodes as mn
from attndsl.frontend.expr import Placement, parse_expr
from attndsl.inputs import random_inputs
from attndsl.ir.calls import build_mask
from attndsl.ir.nodes import Model
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.lower.plan import SparseOptions, offset_bounds, plan_block
from attndsl.masks.algebra import simplify
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.source import Source
from attndsl.weights import load_weights

ATOL = {"float32": 2e-5, "float16": 4e-3}


def spec(block: str, *, seq: str = "dynamic", inputs: str = "", dtype: str = "float32",
         outputs: str = "y: attn", extra_dims: str = "", extra_blocks: str = "") -> Model:
    return one_block(block, dtype=dtype, seed=1, seq=seq, dims=extra_dims, inputs=inputs,
                     blocks=extra_blocks, outputs=outputs)


def compiled(model: Model, sparse: str = "block", block_size: int | None = 4,
             seq_hint: int | None = None):
    weights = load_weights(model)
    proto, explain = compile_with_explanations(
        model, weights, CompileOptions(sparse=sparse, block_size=block_size, seq_hint=seq_hint))
    return make_session(proto), weights, explain


def run_cases(model: Model, kind: str, cases: list[dict], block_size: int | None = 4,
              inputs=None, seq_hint: int | None = None) -> str:
    """Compile once; check the plan's strategy and every case ({'seq', 'batch', 'past'});
    returns the plan's reason."""
    session, weights, explain = compiled(model, block_size=block_size, seq_hint=seq_hint)
    assert explain[0].lowering == f"portable/block-sparse {kind}", explain[0]
    for i, case in enumerate(cases):
        sizes = {k: v for k, v in case.items() if k != "past"}
        feed = random_inputs(model, sizes, seed=i, past_len=case.get("past", 0))
        if inputs is not None:
            feed.update(inputs(feed))
        check_against_reference(model, feed, ATOL[model.dtype], session=session,
                                weights=weights, where=case)
    return explain[0].reason


LENGTHS = [{"batch": 1, "seq": s} for s in (1, 2, 3, 4, 5, 8, 9, 13)] + [{"batch": 3, "seq": 6}]
HEADS = {"mha": "    heads: 4", "gqa": "    heads: 6\n    kv_heads: 2\n    head_dim: 8",
         "mqa": "    heads: 4\n    kv_heads: 1\n    head_dim: 6\n    v_head_dim: 5"}

BANDS = {
    "sliding": "causal & sliding(5)",
    "window": "window(3, 2)",
    "window_future": "window(0, 3)",
    "window_far": "window(9, 9)",
    "chunk": "chunk(4)",
    "causal_chunk": "causal & chunk(3)",
    "dilated": "dilated(6, 1, 2)",
    "per_head": "heads(0, 1) & sliding(3) | heads(2, 3) & window(1, 1)",
    "and_key_terms": "window(2, 2) & ~summary(4, 1) | sliding(2)",
}


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("mask", BANDS)
def test_band(mask, heads):
    run_cases(spec(f"{HEADS[heads]}\n    mask: \"{BANDS[mask]}\""), "band", LENGTHS)


@pytest.mark.parametrize("block_size", [1, 3, 64])
def test_band_tile_sizes(block_size):
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: causal & sliding(4)")
    run_cases(model, "band", LENGTHS, block_size=block_size)


def test_band_in_runs_of_tiles():
    """Long planned lengths split the tiles into runs; short inputs leave most runs empty."""
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: window(5, 2)")
    reason = run_cases(model, "band", LENGTHS, block_size=2, seq_hint=1 << 22)
    assert "in 32 runs of tiles" in reason


CACHED = [{"batch": 1, "seq": 1, "past": 0}, {"batch": 2, "seq": 1, "past": 9},
          {"batch": 1, "seq": 3, "past": 5}, {"batch": 1, "seq": 6, "past": 2},
          {"batch": 2, "seq": 9, "past": 4}]


@pytest.mark.parametrize("mask", ["causal & sliding(4)", "window(2, 1)", "causal & chunk(5)"])
def test_band_with_cache_and_rope(mask):
    model = spec(f"    heads: 6\n    kv_heads: 3\n    head_dim: 4\n    mask: {mask}\n"
                 "    cache: true\n    rope: {theta: 10000.0}")
    run_cases(model, "band", CACHED)


SCORES = {
    "alibi": "[alibi]",
    "softcap": "[softcap(2.0)]",
    "relative_bias": "[relative_bias(buckets=8, max_distance=6)]",
    "all": "[alibi, relative_bias(buckets=6, max_distance=5, bidirectional=false), "
           "softcap(3.0)]",
}


@pytest.mark.parametrize("score", SCORES)
def test_band_scores(score):
    model = spec(f"    heads: 6\n    kv_heads: 2\n    head_dim: 4\n    scale: 2.0\n"
                 f"    mask: window(3, 1)\n    score: {SCORES[score]}\n    cache: true")
    run_cases(model, "band", CACHED)


@pytest.mark.parametrize("score", SCORES)
def test_chunk_scores(score):
    model = spec(f"    heads: 6\n    kv_heads: 2\n    head_dim: 4\n    mask: causal\n"
                 f"    score: {SCORES[score]}")
    run_cases(model, "chunks", LENGTHS)


INPUTS = ("  lens: {shape: [batch], dtype: int64}\n"
          "  ids: {shape: [batch, seq], dtype: int64}")


def _empty_rows(feed):
    """Length 0 for the first batch row: its queries attend no key (guard: output 0)."""
    lens = feed["lens"].copy()
    lens[0] = 0
    return {"lens": lens}


@pytest.mark.parametrize(("mask", "kind"), [
    ("window(2, 2) & padding(lens)", "band"),
    ("sliding(3) & document(ids)", "band"),
    ("causal & padding(lens)", "chunks"),
    ("causal & document(ids) | heads(0) & causal & prefix(2)", "chunks"),
])
def test_input_masks_and_empty_rows(mask, kind):
    model = spec(f"    heads: 4\n    kv_heads: 2\n    mask: \"{mask}\"", inputs=INPUTS)
    cases = [{"batch": 2, "seq": s} for s in (1, 4, 7)]
    run_cases(model, kind, cases)
    run_cases(model, kind, cases, inputs=_empty_rows)


def test_cross_attention_band_rows_without_keys():
    """Queries past the end of a shorter key stream have no key in window(1, 1)."""
    model = spec("    key_value: mem\n    heads: 4\n    mask: window(1, 1)",
                 inputs="  mem: [batch, mem_len, d]", extra_dims="  mem_len: dynamic")
    cases = [{"batch": 2, "seq": s, "mem_len": m} for s, m in ((7, 3), (1, 5), (9, 9), (4, 1))]
    run_cases(model, "band", cases)


CHUNKED = {
    "causal": "causal",
    "strided": "strided(3) & causal",
    "per_head": "heads(0, 1) & sliding(2) | heads(2, 3) & causal",
    "prefix_lm_future": "window(4, 1) | causal & summary(3, 1)",
}


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("mask", CHUNKED)
def test_chunks(mask, heads):
    run_cases(spec(f"{HEADS[heads]}\n    mask: \"{CHUNKED[mask]}\""), "chunks", LENGTHS)


@pytest.mark.parametrize("mask", ["causal", "causal & document(ids)"])
def test_chunks_with_cache_when_forced(mask):
    model = spec(f"    heads: 6\n    kv_heads: 2\n    head_dim: 4\n    mask: {mask}\n"
                 "    cache: true\n    rope: {theta: 10000.0}",
                 inputs="  ids: {shape: [batch, total], dtype: int64}",
                 extra_dims="  total: dynamic")
    cases = [dict(c, total=c["seq"] + c["past"]) for c in CACHED]
    run_cases(model, "chunks", cases)


TILED = {
    "bigbird": ("window(4, 4) | global(0, 37) | random(2, block=8, seed=7)", 8),
    "longformer": ("sliding(4) | global(3)", 8),
    "summary": ("summary(16, 2) | sliding(3)", 8),
    "random_tiles": ("random(2, block=4, seed=1) | window(1, 1)", None),
    "with_padding": ("(window(3, 3) | global(1)) & padding(lens)", 8),
}


@pytest.mark.parametrize("seq", [64, 100])
@pytest.mark.parametrize("mask", TILED)
def test_tiles(mask, seq):
    text, block_size = TILED[mask]
    model = spec(f"    heads: 4\n    kv_heads: 2\n    mask: \"{text}\"", seq=str(seq),
                 inputs="  lens: {shape: [batch], dtype: int64}")
    run_cases(model, "tiles", [{"batch": 1}, {"batch": 3}], block_size=block_size)


def test_tiles_cross_attention():
    model = spec("    key_value: mem\n    heads: 4\n    mask: window(2, 2) | global(0)",
                 seq="40", inputs="  mem: [batch, mem_len, d]", extra_dims="  mem_len: 60")
    run_cases(model, "tiles", [{"batch": 2}], block_size=8)


def test_float16_band_with_cache():
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: causal & sliding(5)\n    cache: true",
                 dtype="float16")
    run_cases(model, "band", CACHED)


def test_float16_chunks():
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: causal\n    score: [alibi]",
                 dtype="float16")
    run_cases(model, "chunks", LENGTHS)


def test_two_blocks_each_explained():
    model = spec("    heads: 4\n    mask: causal & sliding(3)",
                 extra_blocks="  second:\n    query: attn\n    heads: 2\n    mask: causal",
                 outputs="y: second")
    session, weights, explain = compiled(model)
    assert [(e.block, e.lowering) for e in explain] == [
        ("attn", "portable/block-sparse band"), ("second", "portable/block-sparse chunks")]
    assert all(e.reason for e in explain)
    feed = random_inputs(model, {"batch": 2, "seq": 11})
    got, want = run_session(session, feed), run_reference(model, weights, feed)
    assert np.abs(got["y"] - want["y"]).max() < 2e-5


# ---------------------------------------------------------------- plan choices


def plan_of(model: Model, **options) -> tuple[str, str]:
    _, explain = compile_with_explanations(model, None, CompileOptions(**options))
    return explain[0].lowering, explain[0].reason


def test_sparse_dense_forces_dense():
    lowering, reason = plan_of(spec("    heads: 4\n    mask: causal & sliding(8)"),
                               sparse="dense")
    assert lowering == "portable/dense" and "--sparse dense" in reason


def test_sparse_block_forces_sparse_on_short_static_lengths():
    model = spec("    heads: 4\n    mask: causal & sliding(8)", seq="16")
    assert plan_of(model, sparse="auto")[0] == "portable/dense"
    lowering, reason = plan_of(model, sparse="block")
    assert lowering.startswith("portable/block-sparse") and "--sparse block" in reason


def test_auto_picks_by_cost():
    long = spec("    heads: 12\n    head_dim: 64\n    mask: causal & "
                "sliding(256)", seq="8192")
    lowering, reason = plan_of(long)
    assert lowering == "portable/block-sparse band"
    assert "offsets -255..0" in reason and "ms" in reason
    dyn = spec("    heads: 4\n    mask: causal & sliding(16)")
    assert plan_of(dyn)[0] == "portable/block-sparse band"
    assert "dynamic lengths costed at 4096" in plan_of(dyn)[1]
    assert plan_of(dyn, seq_hint=16)[0] == "portable/dense"
    wide = spec("    heads: 4\n    mask: causal & sliding(4000)", seq="4096")
    assert plan_of(wide)[0] == "portable/block-sparse chunks"  # gathering ~S keys per tile
    short = spec("    heads: 4\n    mask: causal", seq="64")
    assert plan_of(short)[0] == "portable/dense"


def test_block_size_option_is_used():
    model = spec("    heads: 4\n    mask: causal & sliding(8)", seq="1024")
    assert "tile 32," in plan_of(model, sparse="block", block_size=32)[1]
    assert "tile 128," in plan_of(model, sparse="block", block_size=128)[1]


@pytest.mark.parametrize(("block", "inputs", "outputs", "why"), [
    ("    heads: 4\n    mask: causal & sliding(4)", "", "y: attn\n  p: attn.weights",
     "attn.weights"),
    ("    heads: 4\n    mask: causal & sliding(4)\n    score: [bias(t)]",
     "  t: [batch, 4, seq, seq]", "y: attn", "bias(t)"),
    ("    heads: 4\n    mask: mask(m) & causal", "  m: {shape: [batch, 1, seq, seq], dtype: bool}",
     "y: attn", "mask(m)"),
    ("    heads: 4", "", "y: attn", "no mask"),
])
def test_dense_fallbacks_say_why(block, inputs, outputs, why):
    lowering, reason = plan_of(spec(block, inputs=inputs, outputs=outputs), sparse="block")
    assert lowering == "portable/dense" and why in reason


def test_auto_keeps_causal_with_cache_dense():
    lowering, reason = plan_of(spec("    heads: 4\n    mask: causal\n    cache: true"))
    assert lowering == "portable/dense" and "KV cache" in reason


def test_bad_options():
    model = spec("    heads: 4\n    mask: causal")
    with pytest.raises(LoweringError, match="sparse strategy"):
        compile_model(model, options=CompileOptions(sparse="blocks"))
    with pytest.raises(LoweringError, match="block-size"):
        compile_model(model, options=CompileOptions(block_size=0))


def parse_mask(text: str) -> mn.Mask:
    errors = ErrorCollector()
    node = build_mask(parse_expr(text, Placement(Source(text))), errors)
    assert not errors.errors, errors.errors
    return node


@pytest.mark.parametrize(("text", "bounds"), [
    ("causal", (None, 0)),
    ("causal & sliding(4)", (-3, 0)),
    ("window(2, 5) & causal", (-2, 0)),
    ("chunk(4) & causal", (-3, 0)),
    ("sliding(2) | window(1, 3)", (-1, 3)),
    ("heads(0) & sliding(9) | heads(1) & window(2, 2)", (-8, 2)),
    ("causal | global(0)", (None, None)),
    ("padding(lens) & window(1, 1)", (-1, 1)),
    ("~causal", (1, None)),
])
def test_offset_bounds(text, bounds):
    assert offset_bounds(simplify(parse_mask(text), 2)) == bounds


def test_offset_bounds_never():
    assert offset_bounds(mn.Never()) is None
    assert offset_bounds(mn.And((mn.Sliding(2), mn.Window(-1, 3)))) is None  # [-1, 0], [1, 3]


def test_plan_without_a_model():
    model = spec("    heads: 4\n    mask: causal & sliding(64)")
    plan = plan_block(model.blocks[0], None, None, False, SparseOptions("block", 64))
    assert (plan.kind, plan.tile, plan.lo, plan.hi) == ("band", 64, -63, 0)
