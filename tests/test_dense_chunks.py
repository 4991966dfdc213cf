"""The chunked dense lowering (``dense_chunks``: query chunks that each attend every key)
against the numpy reference, and the GQA row folding of the dense and chunked lowerings.

``plan.py`` picks the chunked dense lowering under ``--sparse auto`` for blocks whose allowed
offsets are not bounded above (no mask, ``padding``, ``~causal``, a global row ...) when one
score tensor would pass ``DENSE_MAX_MIB`` (dynamic lengths costed at ``seq_hint``, 4096 by
default). The reference tests lower that limit to 0 (``small_limit``), so their small blocks
are chunked too: 8 chunks at the default hint, most of them empty or of one row at these
lengths.
"""

from __future__ import annotations

import onnx
import pytest
from helpers import check_against_reference, one_block

from attndsl.inputs import random_inputs
from attndsl.ir.nodes import Model
from attndsl.lower import plan as plan_module
from attndsl.lower.compile import CompileOptions, compile_with_explanations
from attndsl.lower.plan import plan_block
from attndsl.runtime import make_session
from attndsl.weights import load_weights

ATOL = {"float32": 2e-5, "float16": 4e-3}
CHUNKED = "portable/dense chunks"
LENGTHS = [{"batch": 1, "seq": s} for s in (1, 2, 3, 5, 8, 13)] + [{"batch": 3, "seq": 6}]
HEADS = {"mha": "    heads: 4", "gqa": "    heads: 6\n    kv_heads: 2\n    head_dim: 8",
         "mqa": "    heads: 4\n    kv_heads: 1\n    head_dim: 6\n    v_head_dim: 5"}


@pytest.fixture
def small_limit(monkeypatch):
    """No one-tensor score graph is small enough: every eligible block is chunked."""
    monkeypatch.setattr(plan_module, "DENSE_MAX_MIB", 0)


def spec(block: str, *, seq: str = "dynamic", inputs: str = "", dtype: str = "float32",
         extra_dims: str = "") -> Model:
    return one_block(block, dtype=dtype, seed=3, seq=seq, dims=extra_dims, inputs=inputs)


def run_cases(model: Model, cases: list[dict], seq_hint: int | None = None,
              chunks: int | None = None) -> onnx.ModelProto:
    """Compile once with ``--sparse auto``; check the plan chose the chunked dense lowering
    (in ``chunks`` chunks when given) and every case against the reference."""
    weights = load_weights(model)
    proto, explain = compile_with_explanations(model, weights, CompileOptions(seq_hint=seq_hint))
    assert explain[0].lowering == CHUNKED, explain[0]
    if chunks is not None:
        assert f"in {chunks} query chunks" in explain[0].reason, explain[0].reason
    session = make_session(proto)
    for i, case in enumerate(cases):
        sizes = {k: v for k, v in case.items() if k != "past"}
        feed = random_inputs(model, sizes, seed=i)
        check_against_reference(model, feed, ATOL[model.dtype], session=session,
                                weights=weights, where=case)
    return proto


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.usefixtures("small_limit")
def test_unmasked(heads):
    run_cases(spec(HEADS[heads]), LENGTHS)


@pytest.mark.usefixtures("small_limit")
def test_eight_chunks_at_the_default_hint():
    run_cases(spec(HEADS["gqa"]), LENGTHS, chunks=8)


def test_two_chunks_at_a_shorter_hint(small_limit):
    run_cases(spec(HEADS["gqa"]), LENGTHS, seq_hint=1024, chunks=2)


@pytest.mark.parametrize("mask", ["padding(lens)", "~causal", "causal | global(0)",
                                  "heads(0, 1) & causal | heads(2, 3) & ~sliding(2)"])
@pytest.mark.usefixtures("small_limit")
def test_masks_unbounded_above(mask):
    """Masks that may allow any key: evaluated per chunk; ``~causal`` leaves the last row with
    no key (the guard zeroes it), padding(lens) may leave none at all."""
    model = spec(f"    heads: 4\n    kv_heads: 2\n    mask: \"{mask}\"",
                 inputs="  lens: {shape: [batch], dtype: int64}")
    run_cases(model, LENGTHS)


@pytest.mark.parametrize("score", ["[alibi]", "[softcap(2.0)]",
                                   "[relative_bias(buckets=8, max_distance=6)]"])
@pytest.mark.usefixtures("small_limit")
def test_scores(score):
    run_cases(spec(f"    heads: 6\n    kv_heads: 3\n    head_dim: 4\n    scale: 2.0\n"
                   f"    score: {score}"), LENGTHS)


@pytest.mark.usefixtures("small_limit")
def test_sinks_softmax():
    run_cases(spec("    heads: 4\n    kv_heads: 2\n    head_dim: 8\n    sinks: true"), LENGTHS)


@pytest.mark.usefixtures("small_limit")
def test_float16():
    run_cases(spec("    heads: 4\n    kv_heads: 2\n    score: [alibi]", dtype="float16"),
              LENGTHS)


@pytest.mark.usefixtures("small_limit")
def test_cross_attention():
    model = spec("    key_value: mem\n    heads: 4\n    kv_heads: 2",
                 inputs="  mem: [batch, mem_len, d]", extra_dims="  mem_len: dynamic")
    run_cases(model, [{"batch": 2, "seq": s, "mem_len": m}
                      for s, m in ((7, 3), (1, 5), (9, 9), (4, 1))])


def test_static_length(small_limit):
    """Static lengths: the plan costs the real length (1200: 3 chunks of 400 rows)."""
    model = spec("    heads: 2\n    head_dim: 4", seq="1200")
    proto = run_cases(model, [{"batch": 1}, {"batch": 2}], chunks=3)
    softmaxes = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 3  # one per chunk, and no mask: no Where
    assert not any(n.op_type == "Where" for n in proto.graph.node)


# ---------------------------------------------------------------- plan choices


def plan_of(model: Model, **options) -> tuple[str, str]:
    _, explain = compile_with_explanations(model, None, CompileOptions(**options))
    return explain[0].lowering, explain[0].reason


def test_plan_picks_chunks_by_memory():
    bench = spec("    heads: 12\n    head_dim: 64", seq="4096")
    lowering, reason = plan_of(bench)
    assert lowering == CHUNKED and "768 MiB per batch row (over 512 MiB)" in reason
    assert "estimated" in reason and "48 MiB per batch row" in reason
    # 2048: one score tensor (192 MiB) is allowed
    lowering, reason = plan_of(spec("    heads: 12\n    head_dim: 64", seq="2048"))
    assert lowering == "portable/dense" and "192 MiB per batch row" in reason
    assert plan_of(spec("    heads: 12\n    head_dim: 64"), seq_hint=2048)[0] == "portable/dense"
    assert plan_of(spec("    heads: 12\n    head_dim: 64"))[0] == CHUNKED  # hint 4096


def test_cheaper_sparse_plan_wins_over_chunks():
    """A mask bounded above keeps its block-sparse plan; so does a static pattern with empty
    tiles that the cost model finds cheaper than chunks over every key."""
    causal = spec("    heads: 12\n    head_dim: 64\n    mask: causal", seq="4096")
    assert plan_of(causal)[0] == "portable/block-sparse chunks"
    longformer = spec("    heads: 12\n    head_dim: 64\n    mask: \"sliding(64) | global(0)\"",
                      seq="4096")
    assert plan_of(longformer)[0] == "portable/block-sparse tiles"


def test_plan_chunk_rows_grow_with_length():
    """A chunk's scores stay within the cost model's cache share: more chunks as S grows, so
    peak memory grows with S, not S^2."""
    model = spec("    heads: 12\n    head_dim: 64")
    counts = []
    for s in (4096, 8192, 16384):
        p = plan_block(model.blocks[0], s, s, False)
        assert p.kind == "dense_chunks", p.reason
        counts.append(p.chunks)
        assert 4 * 12 * -(-s // p.chunks) * s / 2**20 <= 64  # one chunk's scores, MiB
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_forced_modes_keep_one_tensor():
    model = spec("    heads: 12\n    head_dim: 64", seq="4096")
    assert plan_of(model, sparse="dense")[0] == "portable/dense"
    lowering, reason = plan_of(model, sparse="block")  # block: block-sparse strategies only
    assert lowering == "portable/dense" and "no mask" in reason


def test_auto_keeps_cached_blocks_dense():
    lowering, reason = plan_of(spec("    heads: 4\n    cache: true"))
    assert lowering == "portable/dense" and "no mask" in reason


def test_weights_output_stays_dense():
    model = one_block("    heads: 4", outputs="y: attn\n  p: attn.weights")
    lowering, reason = plan_of(model)
    assert lowering == "portable/dense" and "attn.weights" in reason


# ---------------------------------------------------------------- GQA row folding


def test_gqa_decode_reads_each_kv_head_once():
    """A GQA decode graph: the present keys are the cache Concat's own output (no Identity:
    ORT would copy the whole cache into it), nothing repeats K/V (no Expand/Tile/Unsqueeze
    of them), and the one Transpose of the keys feeds the scores' MatMul directly (ORT fuses
    it into FusedMatMul, so no transposed copy is made)."""
    model = spec("    heads: 8\n    kv_heads: 2\n    head_dim: 8\n    mask: causal\n"
                 "    cache: true")
    proto, _ = compile_with_explanations(model, None, CompileOptions())
    nodes = proto.graph.node
    assert [n.op_type for n in nodes if "attn.present_key" in n.output] == ["Concat"]
    assert not any(n.op_type == "Identity" and n.output[0].startswith("attn.present")
                   for n in nodes)
    users = [n for n in nodes if "attn.present_key" in n.input]
    assert [n.op_type for n in users] == ["Transpose"]
    assert [n.op_type for n in nodes if users[0].output[0] in n.input] == ["MatMul"]
    assert [n.op_type for n in nodes if "attn.present_value" in n.input] == ["MatMul"]
    assert not any(n.op_type in ("Expand", "Tile") for n in nodes)


@pytest.mark.parametrize("seq", [1, 7])
def test_gqa_folded_rows_against_reference(seq):
    model = spec("    heads: 6\n    kv_heads: 2\n    head_dim: 4\n    mask: causal\n"
                 "    cache: true")
    weights = load_weights(model)
    proto, _ = compile_with_explanations(model, weights, CompileOptions())
    session = make_session(proto)
    for batch, past in ((1, 0), (2, 5), (3, 11)):
        feed = random_inputs(model, {"batch": batch, "seq": seq}, seed=batch, past_len=past)
        check_against_reference(model, feed, ATOL["float32"], session=session,
                                weights=weights, where={"batch": batch, "past": past})
