"""compile_model: opsets, checker, metadata, determinism, atomic saving, and the shape of
the emitted graph (no work that the spec does not ask for)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import check_against_reference, digests_per_hash_seed, one_block_yaml

import attndsl
from attndsl.api import parse_spec
from attndsl.errors import LoweringError, WeightsError
from attndsl.features.nodes import RelativeBias
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, model_bytes, save_model_atomic
from attndsl.lower.pipeline import DEFAULT_PIPELINE, model_after
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

RICH = """\
attndsl: 1
name: rich
dtype: DTYPE
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
    bias: true
    mask: "(causal & sliding(3) | global(0)) & padding(lens)"
    score: [alibi, relative_bias(buckets=8, max_distance=8), softcap(20.0)]
    rope: {theta: 10000.0, dim: 4, interleaved: true}
    cache: true
  enc:
    query: attn
    heads: 2
    mask: "chunk(3) & ~heads(1)"
    score: [bias(t)]
outputs:
  y: enc
  p: attn.weights
"""


def rich(dtype: str = "float32"):
    return parse_spec(RICH.replace("DTYPE", dtype), "rich.yaml")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_opsets(opset, dtype):
    model = rich(dtype)
    weights = load_weights(model)
    proto = compile_model(model, weights, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    assert all(n.domain == "" for n in proto.graph.node)
    feed = random_inputs(model, {"batch": 2, "seq": 5}, past_len=2)
    tol = 2e-5 if dtype == "float32" else 3e-3
    check_against_reference(model, feed, tol, session=make_session(proto), weights=weights)


@pytest.mark.parametrize("opset", [16, 22, 13])
def test_unsupported_opset(opset):
    with pytest.raises(LoweringError, match=f"unsupported ONNX opset {opset}") as err:
        compile_model(rich(), opset=opset)
    assert "17, 18, 19, 20, 21" in str(err.value)


def test_metadata_and_names():
    model = rich()
    proto = compile_model(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["attndsl.spec"] == model.spec_text == RICH.replace("DTYPE", "float32")
    assert meta["attndsl.version"] == attndsl.__version__
    assert meta["attndsl.opset"] == "18"
    assert proto.producer_name == "attndsl"
    assert proto.graph.name == "rich"
    assert [i.name for i in proto.graph.input] == ["x", "lens", "t", "attn.past_key",
                                                   "attn.past_value"]
    assert [o.name for o in proto.graph.output] == ["y", "p", "attn.present_key",
                                                    "attn.present_value"]
    assert meta["attndsl.passes"] == ",".join(DEFAULT_PIPELINE)
    inits = {i.name: list(i.dims) for i in proto.graph.initializer}
    for name, shape in model_after(model).weight_shapes().items():  # after fuse-qkv etc.
        assert inits[name] == list(shape)
    bare = compile_model(model, options=CompileOptions(passes=()))
    inits = {i.name: list(i.dims) for i in bare.graph.initializer}
    for name, shape in model.weight_shapes().items():  # without passes: named as the weights
        assert inits[name] == list(shape)


def test_weights_dtype_float16():
    proto = compile_model(rich("float16"))
    inits = {i.name: i for i in proto.graph.initializer}
    assert inits["attn.o_proj.weight"].data_type == onnx.TensorProto.FLOAT16
    for v in (*proto.graph.input[:1], *proto.graph.output):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_deterministic_bytes():
    model = rich()
    assert model_bytes(compile_model(model)) == model_bytes(compile_model(rich()))
    assert compile_model(model).SerializeToString() == compile_model(model).SerializeToString()


def test_deterministic_across_processes(tmp_path):
    """Hash seeds (set and dict order of strings) do not change the bytes."""
    spec = tmp_path / "rich.yaml"
    spec.write_text(RICH.replace("DTYPE", "float32"))
    digests = {d[f"{spec} [default]"]
               for d in digests_per_hash_seed([spec], {"default": {}}, ("1", "2"))}
    here = hashlib.sha256(model_bytes(compile_model(parse_spec(spec.read_text(),
                                                               str(spec))))).hexdigest()
    assert digests == {here}


def test_save_roundtrip(tmp_path):
    proto = compile_model(rich())
    path = tmp_path / "m.onnx"
    save_model_atomic(proto, path)
    assert path.read_bytes() == model_bytes(proto)
    assert onnx.load(str(path)).graph.name == "rich"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failed_compile_leaves_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old model")
    model = rich()
    bad = dict(load_weights(model))
    bad["attn.q_proj.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsError, match="attn.q_proj.weight"):
        save_model_atomic(compile_model(model, bad), path)
    assert path.read_bytes() == b"old model"


@pytest.mark.parametrize("fail_at", ["os.replace", "os.fsync"])
def test_failed_write_leaves_file(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old model")
    proto = compile_model(rich())

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fail_at, boom)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(proto, path)
    assert path.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_seeded_weights_by_default():
    model = rich()
    assert model_bytes(compile_model(model)) == model_bytes(compile_model(model,
                                                                          load_weights(model)))


def test_relative_bias_degenerate_buckets():
    """The IR builder rejects these; the lowering checks its lookup table all the same."""
    model = rich()
    block = replace(model.blocks[0], score=(RelativeBias(buckets=16, max_distance=2),))
    with pytest.raises(LoweringError, match="relative_bias"):
        compile_model(replace(model, blocks=(block, *model.blocks[1:])))


# ------------------------------------------------------------ no work that is not needed

def ops_of(text: str) -> list[str]:
    """The ops the lowering emits (no passes: the graph passes fold constant guards)."""
    proto = compile_model(parse_spec(text, "x.yaml"), options=CompileOptions(passes=()))
    return [n.op_type for n in proto.graph.node]


def block_spec(settings: str, inputs: str = "", kv: str = "x") -> str:
    return one_block_yaml(f"    key_value: {kv}\n    heads: 2\n{settings}", d=16,
                          dims="  src: dynamic", inputs="  e: [batch, src, d]\n" + inputs)


def test_mask_all_builds_no_mask():
    ops = ops_of(block_spec(""))
    for op in ("Where", "Range", "ReduceMax", "Shape", "Cast"):
        assert op not in ops


def test_causal_self_attention_needs_no_guard():
    ops = ops_of(block_spec("    mask: \"causal & sliding(4) | prefix(1)\""))
    assert "Where" in ops and "ReduceMax" not in ops


@pytest.mark.parametrize("settings,kv", [
    ("    mask: sliding(4)", "e"),  # cross-attention: q may be past the keys
    ("    mask: \"causal & prefix(2) & ~causal\"", "x"),
    ("    mask: global(3)", "x"),
    ("    mask: padding(lens)", "x"),
    ("    score: [bias(t)]", "x"),
])
def test_guard_when_rows_may_be_empty(settings, kv):
    inputs = "  lens: {shape: [batch], dtype: int64}\n  t: [batch, 1, 1, seq]"
    assert "ReduceMax" in ops_of(block_spec(settings, inputs, kv))


def test_mha_has_no_group_reshape():
    gqa = ops_of(block_spec("    kv_heads: 1"))
    mha = ops_of(block_spec(""))
    assert gqa.count("Reshape") == mha.count("Reshape") + 4
    assert "Expand" not in gqa and "Tile" not in gqa


def test_saved_model_runs(tmp_path):
    path = tmp_path / "m.onnx"
    model = rich()
    save_model_atomic(compile_model(model), path)
    session = make_session(str(path))
    feed = random_inputs(model, {"batch": 1, "seq": 2}, past_len=1)
    assert set(run_session(session, feed)) == {"y", "p", "attn.present_key",
                                                "attn.present_value"}
    assert Path(path).stat().st_size > 0
