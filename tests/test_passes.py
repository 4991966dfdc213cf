"""The pass manager and the IR passes: every pass keeps the reference's numbers (with the
weights it produced) and ONNX Runtime's, is idempotent, reports ``changed`` truthfully, and
does its specific rewrite. Graph passes: tests/test_passes_graph.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from attndsl import parse_spec, print_ir
from attndsl.errors import AttnDSLError
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model
from attndsl.lower.pipeline import (
    DEFAULT_PIPELINE,
    REGISTRY,
    get_pass,
    ir_after,
    model_after,
    parse_pass_list,
    resolve,
    run_passes,
)
from attndsl.passes import PassManager, PassResult, Program
from attndsl.passes.base import IRPass
from attndsl.passes.dead_outputs import DeadOutputsOptions
from attndsl.passes.fold_scale import FoldScale, FoldScaleOptions
from attndsl.passes.fuse_qkv import FuseQKVOptions
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import check_weights, load_weights

GOLDEN = Path(__file__).resolve().parent / "golden" / "passes"
UPDATE = os.environ.get("ATTNDSL_UPDATE_GOLDEN") == "1"

SPECS = {
    # GQA, biases, partial interleaved RoPE, cache, every score modifier; a second block on it
    "rich": """\
attndsl: 1
name: rich
dims: {batch: dynamic, seq: dynamic, d: 32}
inputs:
  x: [batch, seq, d]
  lens: {shape: [batch], dtype: int64}
  t: [batch, 1, 1, seq]
blocks:
  attn:
    query: x
    heads: 4
    kv_heads: 2
    head_dim: 6
    bias: true
    mask: "(causal & sliding(3) | global(0)) & padding(lens) & causal"
    score: [alibi, relative_bias(buckets=8, max_distance=8), softcap(20.0)]
    rope: {theta: 10000.0, dim: 4, interleaved: true}
    cache: true
  enc:
    query: attn
    heads: 2
    mask: "chunk(3) & ~heads(1) & (heads(0) | heads(1))"
    score: [bias(t)]
outputs:
  y: enc
  p: attn.weights
""",
    # encoder-decoder: cross-attention (no fusion), padding, an explicit scale
    "cross": """\
attndsl: 1
name: cross
dims: {batch: dynamic, src: dynamic, tgt: dynamic, d: 16}
inputs:
  src: [batch, src, d]
  tgt: [batch, tgt, d]
  n: {shape: [batch], dtype: int64}
blocks:
  enc: {query: src, heads: 2, mask: "padding(n) & all"}
  dec: {query: tgt, heads: 2, mask: causal, scale: 0.3}
  xattn: {query: dec, key_value: enc, heads: 2, v_head_dim: 5, mask: padding(n)}
outputs:
  y: xattn
""",
    # core mode: no projections (nothing to fold or fuse)
    "core": """\
attndsl: 1
name: core
dims: {batch: dynamic, seq: dynamic}
inputs:
  q: [batch, seq, 8]
  k: [batch, seq, 4]
  v: [batch, seq, 6]
blocks:
  a: {query: q, key: k, value: v, project: false, heads: 2, kv_heads: 1, v_head_dim: 6,
      mask: "causal & causal"}
outputs:
  y: a
""",
    # float16, MQA, full RoPE, a block nothing reads
    "fp16": """\
attndsl: 1
name: fp16
dtype: float16
dims: {batch: dynamic, seq: dynamic, d: 24}
inputs:
  x: [batch, seq, d]
blocks:
  a: {query: x, heads: 3, kv_heads: 1, bias: true, mask: causal, rope: {theta: 500.0}}
  unused: {query: a, heads: 2}
outputs:
  y: a
""",
}
SIZES = {"rich": (2, {"seq": 5}), "cross": (0, {"src": 6, "tgt": 4}), "core": (0, {}),
         "fp16": (0, {"seq": 6})}
IR_PASSES = [name for name, cls in REGISTRY.items() if cls.stage == "ir"]


@dataclass
class Case:
    model: object
    weights: dict
    feed: dict
    tol: float


def case(name: str) -> Case:
    model = parse_spec(SPECS[name], f"{name}.yaml")
    past, sizes = SIZES[name]
    feed = random_inputs(model, sizes, seed=1, past_len=past)
    return Case(model, load_weights(model), feed, 2e-3 if model.dtype == "float16" else 1e-6)


def assert_close(got: dict, want: dict, tol: float) -> None:
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name], np.float64), want[name], rtol=tol,
                                   atol=tol, err_msg=name)


def ort(model, weights, feed, passes) -> dict:
    proto = compile_model(model, weights, options=CompileOptions(passes=passes))
    return run_session(make_session(proto), feed)


# ------------------------------------------------------------ every IR pass


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", IR_PASSES)
def test_ir_pass_keeps_reference_numbers(name, spec):
    c = case(spec)
    before = Program(c.model, c.weights)
    result = get_pass(name).run(before)
    after = result.program
    check_weights(after.model, dict(after.weights), "after")  # weights match the new layout
    assert_close(run_reference(after.model, after.weights, c.feed),
                 run_reference(c.model, c.weights, c.feed), c.tol)
    # changed is True exactly when the program differs
    differs = after.model != before.model or after.weights.keys() != before.weights.keys() or any(
        not np.array_equal(after.weights[k], before.weights[k]) for k in after.weights)
    assert result.changed == differs
    if not result.changed:
        assert after is before
    # idempotent: a second run changes nothing
    again = get_pass(name).run(after)
    assert not again.changed and again.program is after


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", [*REGISTRY, "default"])
def test_pass_keeps_onnx_runtime_numbers(name, spec):
    c = case(spec)
    passes = None if name == "default" else (name,)
    want = ort(c.model, c.weights, c.feed, ())
    tol = 3e-3 if c.model.dtype == "float16" else 1e-5
    assert_close(ort(c.model, c.weights, c.feed, passes), want, tol)


@pytest.mark.parametrize("spec", SPECS)
def test_default_pipeline_keeps_the_ort_target_numbers(spec):
    c = case(spec)
    runs = []
    for passes in ((), None):
        options = CompileOptions(target="ort", opset=24, passes=passes)
        runs.append(run_session(make_session(compile_model(c.model, c.weights, options=options)),
                                c.feed))
    assert_close(runs[1], runs[0], 3e-3 if c.model.dtype == "float16" else 1e-5)


@pytest.mark.parametrize("name,spec", [
    ("canonicalize-masks", "rich"), ("canonicalize-masks", "core"), ("fold-scale", "rich"),
    ("fuse-qkv", "cross"), ("dead-outputs", "fp16")])
def test_each_pass_has_work_in_the_samples(name, spec):
    c = case(spec)
    assert get_pass(name).run(Program(c.model, c.weights)).changed


def test_program_weights_are_read_only_views():
    c = case("cross")
    program = Program(c.model, c.weights)
    w = program.weights["enc.q_proj.weight"]
    with pytest.raises(ValueError):
        w[0, 0] = 1.0
    with pytest.raises(TypeError):
        program.weights["enc.q_proj.weight"] = w  # type: ignore[index]
    assert c.weights["enc.q_proj.weight"].flags.writeable  # the caller's array is untouched


# ------------------------------------------------------------ pass by pass


def test_canonicalize_masks_simplifies_with_the_head_count():
    c = case("rich")
    model = get_pass("canonicalize-masks").run(Program(c.model, c.weights)).program.model
    text = print_ir(model)
    assert "mask heads(0) & chunk(3)\n" in text  # ~heads(1) & (heads(0) | heads(1)), 2 heads
    assert "(causal & sliding(3) | global(0)) & padding(lens)\n" not in text


def test_canonicalize_masks_golden():
    spec = GOLDEN / "canonical_masks.yaml"
    model = parse_spec(spec.read_text(encoding="utf-8"), spec.name)
    got = ir_after(model, load_weights(model), "canonicalize-masks")
    expected = spec.with_suffix(".ir")
    if UPDATE:
        expected.write_text(got, encoding="utf-8")
    assert got == expected.read_text(encoding="utf-8")


def test_fold_scale_moves_the_scale_into_the_query_rows():
    c = case("cross")
    after = get_pass("fold-scale").run(Program(c.model, c.weights)).program
    for b in after.model.blocks:
        assert b.scale == 1.0
        orig = c.model.block(b.name).scale
        np.testing.assert_allclose(after.weights[f"{b.name}.q_proj.weight"],
                                   c.weights[f"{b.name}.q_proj.weight"] * orig, rtol=1e-6)
        for p in "kvo":
            assert after.weights[f"{b.name}.{p}_proj.weight"] is not None
            np.testing.assert_array_equal(after.weights[f"{b.name}.{p}_proj.weight"],
                                          c.weights[f"{b.name}.{p}_proj.weight"])
    ops = [n.op_type for n in compile_model(after.model, after.weights,
                                            options=CompileOptions(passes=())).graph.node]
    bare = [n.op_type for n in compile_model(c.model, c.weights,
                                             options=CompileOptions(passes=())).graph.node]
    assert ops.count("Mul") == bare.count("Mul") - 3  # no per-step scaling of q


def test_fold_scale_exact_only_and_core_mode():
    c = case("cross")  # scales 0.25 (head_dim 16 / 2 heads = 8: 1/sqrt(8)) and 0.3
    exact = FoldScale(FoldScaleOptions(exact_only=True)).run(Program(c.model, c.weights))
    assert [b.scale for b in exact.program.model.blocks] == [
        b.scale for b in c.model.blocks]  # 1/sqrt(8) and 0.3 are not powers of two
    quarter = replace(c.model, blocks=tuple(replace(b, scale=0.25) for b in c.model.blocks))
    exact = FoldScale(FoldScaleOptions(exact_only=True)).run(Program(quarter, c.weights))
    assert all(b.scale == 1.0 for b in exact.program.model.blocks)
    core = case("core")
    assert not get_pass("fold-scale").run(Program(core.model, core.weights)).changed


def test_fold_scale_and_fuse_qkv_commute():
    c = case("rich")
    a = run_passes(Program(c.model, c.weights), ["fold-scale", "fuse-qkv"])
    b = run_passes(Program(c.model, c.weights), ["fuse-qkv", "fold-scale"])
    assert a.model == b.model
    for name in a.weights:
        np.testing.assert_allclose(a.weights[name], b.weights[name], rtol=1e-6)


def test_fuse_qkv_emits_one_matmul_for_the_projections():
    c = case("fp16")
    after = get_pass("fuse-qkv").run(Program(c.model, c.weights)).program
    a = after.model.block("a")
    assert a.fused_qkv
    assert after.weights["a.qkv_proj.weight"].shape == (3 * 8 + 8 + 8, 24)
    assert after.weights["a.qkv_proj.bias"].shape == (40,)
    assert not any(n.startswith("a.q_proj") for n in after.weights)
    assert "fused qkv projection" in print_ir(after.model)
    fused = compile_model(after.model, after.weights, options=CompileOptions(passes=()))
    bare = compile_model(c.model, c.weights, options=CompileOptions(passes=()))
    projections = [n.name.split("/")[2] for n in fused.graph.node
                   if n.op_type == "MatMul" and n.name.startswith("/a/") and "_proj/" in n.name]
    assert projections == ["qkv_proj", "o_proj"]
    count = [[n.op_type for n in p.graph.node].count("MatMul") for p in (bare, fused)]
    assert count[0] - count[1] == 2 * 2  # both blocks: three projection MatMuls -> one
    assert "Split" in [n.op_type for n in fused.graph.node if n.name.startswith("/a/")]


def test_fuse_qkv_leaves_cross_attention_and_core_blocks():
    c = case("cross")
    after = get_pass("fuse-qkv").run(Program(c.model, c.weights)).program
    assert [b.fused_qkv for b in after.model.blocks] == [True, True, False]
    core = case("core")
    assert not get_pass("fuse-qkv").run(Program(core.model, core.weights)).changed


def test_fuse_qkv_block_option():
    c = case("cross")
    p = get_pass("fuse-qkv")
    p = type(p)(FuseQKVOptions(blocks=("dec",)))
    after = p.run(Program(c.model, c.weights)).program
    assert [b.fused_qkv for b in after.model.blocks] == [False, True, False]


def test_dead_outputs_drops_unread_blocks_and_their_weights():
    c = case("fp16")
    after = get_pass("dead-outputs").run(Program(c.model, c.weights)).program
    assert [b.name for b in after.model.blocks] == ["a"]
    assert not any(n.startswith("unused.") for n in after.weights)
    assert after.model.inputs == c.model.inputs and after.model.outputs == c.model.outputs
    kept = type(get_pass("dead-outputs"))(DeadOutputsOptions(keep=("unused",)))
    assert not kept.run(Program(c.model, c.weights)).changed


def test_dead_outputs_keeps_cache_blocks_and_their_inputs():
    text = SPECS["rich"].replace("  y: enc\n  p: attn.weights\n", "  y: enc\n")
    text = text.replace("blocks:\n", "blocks:\n  side: {query: x, heads: 2, cache: true}\n")
    model = parse_spec(text, "x.yaml")
    program = Program(model, load_weights(model))
    after = get_pass("dead-outputs").run(program)
    assert not after.changed  # attn feeds enc (an output); side has a cache (outputs)


# ------------------------------------------------------------ manager, registry, errors


def test_unknown_pass_names_suggest_the_closest():
    with pytest.raises(AttnDSLError, match="unknown pass 'fuse-qvk'") as err:
        resolve(["fuse-qvk"])
    assert "did you mean 'fuse-qkv'?" in str(err.value)
    with pytest.raises(AttnDSLError, match="unknown pass"):
        parse_pass_list("fold-scale, fold-constant")
    with pytest.raises(AttnDSLError, match="known passes: canonicalize-masks"):
        get_pass("zzz")
    with pytest.raises(AttnDSLError, match="not in the pipeline"):
        resolve(["fold-scale"], stop_after="fuse-qkv")


def test_registry_and_default_pipeline():
    assert list(REGISTRY) == [cls.name for cls in REGISTRY.values()]
    assert set(DEFAULT_PIPELINE) == set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert name == name.lower() and " " not in name and "_" not in name
        assert cls.stage in ("ir", "graph")
        assert isinstance(cls().options, cls.Options)
    assert parse_pass_list(" fuse-qkv ,fold-scale,") == ["fuse-qkv", "fold-scale"]


def test_options_are_typed():
    with pytest.raises(AttnDSLError, match="takes FoldScaleOptions"):
        FoldScale(FuseQKVOptions())


class _Counting(IRPass):
    name = "counting"

    def __init__(self, changes: int):
        super().__init__()
        self.changes = changes
        self.runs = 0

    def run(self, program):
        self.runs += 1
        changed = self.runs <= self.changes
        return PassResult(program, changed)


def test_manager_runs_to_a_fixpoint_and_is_bounded():
    c = case("core")
    program = Program(c.model, c.weights)
    a, b = _Counting(1), _Counting(0)
    result = PassManager([a, b]).run(program)
    assert result.changed and (a.runs, b.runs) == (2, 1)  # a reran once, b did not rerun
    forever = _Counting(10**9)
    result = PassManager([forever], max_rounds=3).run(program)
    assert forever.runs == 3 and result.changed
    idle = _Counting(0)
    assert not PassManager([idle]).run(program).changed and idle.runs == 1


def test_stop_after_and_ir_after():
    c = case("cross")
    text = ir_after(c.model, c.weights, "fold-scale")
    assert "scale 1.0" in text and "fused qkv" not in text
    assert "fused qkv projection" in ir_after(c.model, c.weights, "fuse-qkv")
    graph = ir_after(c.model, c.weights, "share-computations")
    assert "  float32[48,16] enc.qkv_proj.weight\n" in graph
    assert "MatMul" in graph and "float_data" not in graph
    assert len(resolve(stop_after="fuse-qkv")) == DEFAULT_PIPELINE.index("fuse-qkv") + 1


def test_model_after_is_the_layout_of_the_compiled_weights():
    c = case("rich")
    program = run_passes(Program(c.model, c.weights))
    assert model_after(c.model) == program.model
    assert model_after(c.model, ()) is c.model
    proto = compile_model(c.model, c.weights)
    inits = {i.name for i in proto.graph.initializer}
    assert set(program.model.weight_shapes()) <= inits


def test_no_passes_compiles_the_unoptimized_graph():
    c = case("rich")
    bare = compile_model(c.model, c.weights, options=CompileOptions(passes=()))
    meta = {p.key: p.value for p in bare.metadata_props}
    assert meta["attndsl.passes"] == ""
    assert {n for n in c.model.weight_shapes()} <= {i.name for i in bare.graph.initializer}
    optimized = compile_model(c.model, c.weights)
    assert len(optimized.graph.node) < len(bare.graph.node)
