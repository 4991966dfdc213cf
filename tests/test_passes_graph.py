"""The graph passes on the lowered ONNX model: share-computations (CSE) and fold-constants.
Each keeps ONNX Runtime's numbers, is idempotent, reports ``changed`` truthfully, never
mutates its input, and gives the same bytes on every run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import digests_per_hash_seed

from attndsl import parse_spec
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, model_bytes
from attndsl.lower.graph_passes.fold_constants import FoldConstants, FoldConstantsOptions
from attndsl.lower.graph_passes.share_computations import (
    ShareComputations,
    ShareComputationsOptions,
)
from attndsl.lower.pipeline import get_pass
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

GRAPH_PASSES = ["share-computations", "fold-constants"]

# two stacked blocks and a third on the input: same positions, same causal mask, same RoPE
STACK = """\
attndsl: 1
name: stack
dims: {batch: dynamic, seq: SEQ, d: 16}
inputs:
  x: [batch, seq, d]
blocks:
  a: {query: x, heads: 2, mask: causal, rope: {theta: 100.0}, score: [alibi]}
  b: {query: a, heads: 2, mask: causal, rope: {theta: 100.0}}
  c: {query: x, heads: 2, mask: "causal & sliding(3)",
      score: [relative_bias(buckets=4, max_distance=8)]}
outputs:
  y: b
  z: c
  w: c
"""


def stack(seq: str | int = "dynamic"):
    return parse_spec(STACK.replace("SEQ", str(seq)), "stack.yaml")


def lowered(model, passes=(), sparse="dense") -> onnx.ModelProto:
    """Structural tests use the dense lowering (the block-sparse plan depends on sizes)."""
    options = CompileOptions(passes=passes, sparse=sparse)
    return compile_model(model, load_weights(model), options=options)


def ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


def run(proto: onnx.ModelProto, model, sizes=None) -> dict:
    return run_session(make_session(proto), random_inputs(model, sizes or {"seq": 6}, seed=2))


def assert_same_outputs(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("sparse", ["dense", "auto", "block"])
@pytest.mark.parametrize("seq", ["dynamic", 6])
@pytest.mark.parametrize("name", GRAPH_PASSES)
def test_graph_pass_equivalent_idempotent_pure(name, seq, sparse):
    model = stack(seq)
    before = lowered(model, sparse=sparse)
    frozen = model_bytes(before)
    result = get_pass(name).run(before)
    assert model_bytes(before) == frozen  # the input is not mutated
    onnx.checker.check_model(result.program, full_check=True)
    assert result.changed == (model_bytes(result.program) != frozen)
    if not result.changed:
        assert result.program is before
    assert_same_outputs(run(result.program, model), run(before, model))
    again = get_pass(name).run(result.program)
    assert not again.changed and again.program is result.program
    # deterministic: the same bytes from a second, independent run
    again = get_pass(name).run(lowered(model, sparse=sparse)).program
    assert model_bytes(again) == model_bytes(result.program)


def test_share_computations_shares_positions_masks_and_rope_between_blocks():
    model = stack()
    before = lowered(model)
    after = get_pass("share-computations").run(before).program
    assert len(after.graph.node) < len(before.graph.node)
    assert ops(before).count("Range") == 3 and ops(after).count("Range") == 1
    assert ops(before).count("Cos") == 2 and ops(after).count("Cos") == 1  # RoPE tables
    assert ops(after).count("LessOrEqual") < ops(before).count("LessOrEqual")  # causal
    # two outputs of one block stay two outputs
    assert [o.name for o in after.graph.output] == ["y", "z", "w"]
    out = run(after, model)
    np.testing.assert_array_equal(out["z"], out["w"])


def test_share_computations_merges_duplicate_constants_only_when_asked():
    model = stack(5)
    folded = FoldConstants(FoldConstantsOptions(slack_bytes=1 << 20)).run(lowered(model))
    proto = folded.program  # the causal mask of a and b is now two equal initializers
    bool_type = onnx.TensorProto.BOOL
    shapes = [tuple(i.dims) for i in proto.graph.initializer if i.data_type == bool_type]
    assert shapes.count((5, 5)) >= 2
    merged = ShareComputations().run(proto).program
    shapes = [tuple(i.dims) for i in merged.graph.initializer if i.data_type == bool_type]
    assert shapes.count((5, 5)) < 3
    kept = ShareComputations(ShareComputationsOptions(initializers=False)).run(proto).program
    assert len(kept.graph.initializer) >= len(merged.graph.initializer)


def test_share_computations_never_merges_parameters():
    text = STACK.replace("SEQ", "dynamic")
    model = parse_spec(text, "s.yaml")
    weights = load_weights(model)
    weights = {**weights, "b.o_proj.weight": weights["a.o_proj.weight"]}  # equal arrays
    proto = compile_model(model, weights, options=CompileOptions(passes=()))
    after = get_pass("share-computations").run(proto).program
    names = {i.name for i in after.graph.initializer}
    assert {"a.o_proj.weight", "b.o_proj.weight"} <= names


def test_fold_constants_stores_a_small_static_mask():
    model = stack(8)
    after = get_pass("fold-constants").run(lowered(model)).program
    bools = [tuple(i.dims) for i in after.graph.initializer if i.data_type == onnx.TensorProto.BOOL]
    assert (8, 8) in bools  # the causal mask, as an initializer
    for op in ("Shape", "Range", "LessOrEqual", "Cos", "Abs"):  # positions, mask, RoPE, ALiBi
        assert op not in ops(after), op
    weights = load_weights(model)  # parameters keep their names and bytes
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in after.graph.initializer}
    for name, arr in weights.items():
        np.testing.assert_array_equal(inits[name], arr)


def test_fold_constants_keeps_arithmetic_for_a_large_static_mask():
    model = stack(4096)
    before = lowered(model)
    after = get_pass("fold-constants").run(before).program
    biggest = max(int(np.prod(i.dims)) for i in after.graph.initializer)
    assert biggest < 4096 * 16  # no [S, S] table: 16 MB against a few hundred bytes
    assert after.ByteSize() <= before.ByteSize()
    assert "LessOrEqual" in ops(after) and "Range" in ops(after)
    assert "Shape" not in ops(after)  # the static sizes fold to scalars


def test_fold_constants_with_dynamic_lengths_keeps_shape_arithmetic():
    model = stack()
    after = get_pass("fold-constants").run(lowered(model)).program
    assert "Shape" in ops(after) and "Range" in ops(after)


def test_fold_constants_options():
    model = stack(8)
    nothing = FoldConstants(FoldConstantsOptions(max_eval_bytes=0)).run(lowered(model))
    assert "Range" in ops(nothing.program)
    tight = FoldConstants(FoldConstantsOptions(slack_bytes=0)).run(lowered(model)).program
    loose = FoldConstants(FoldConstantsOptions(slack_bytes=1 << 20)).run(lowered(model)).program
    assert len(loose.graph.node) <= len(tight.graph.node)
    assert_same_outputs(run(tight, model), run(loose, model))


def test_default_pipeline_on_a_static_model():
    model = stack(8)
    bare = lowered(model)
    full = lowered(model, passes=None)
    assert len(full.graph.node) < len(bare.graph.node)
    assert_same_outputs(run(full, model), run(bare, model))
    assert model_bytes(full) == model_bytes(lowered(model, passes=None))


def test_same_bytes_across_processes(tmp_path):
    """Hash seeds (set and dict order of strings) do not change what the passes emit."""
    spec = tmp_path / "stack.yaml"
    spec.write_text(STACK.replace("SEQ", "8"))
    runs = digests_per_hash_seed([spec], {"default": {}}, ("1", "2"))
    assert runs[0] == runs[1] and not runs[0][f"{spec} [default]"].startswith("error:")
