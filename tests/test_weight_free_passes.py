"""The graph passes and the checker never touch weight bytes (``lower.weight_store``): they
run on a model whose parameters are stubs; reading a stub's data fails; shape inference and
every tensor the passes read are weight-free; the arrays attached at the end are the caller's
(no copy); and the attached model is the same bytes as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from attndsl import parse_spec
from attndsl.api import load_spec
from attndsl.lower import compile as compile_module
from attndsl.lower.compile import (
    CompileOptions,
    compile_detached,
    compile_model,
    model_bytes,
)
from attndsl.lower.graph_passes import GRAPH_PASSES
from attndsl.lower.pipeline import graph_text, ir_after
from attndsl.lower.weight_store import (
    checker_view,
    detach_proto,
    is_parameter,
    is_stub,
)
from attndsl.weights import seeded_weights

ROOT = Path(__file__).resolve().parents[1]
SPECS = [ROOT / "examples" / "mistral_block.yaml", ROOT / "examples" / "gemma2_local_global.yaml",
         ROOT / "specs" / "t5_relative.yaml", ROOT / "examples" / "encoder_decoder.yaml"]
OPTIONS = [CompileOptions(), CompileOptions(target="ort"),
           CompileOptions(sparse="block", block_size=4)]

TWO_BLOCKS = """\
attndsl: 1
name: two
dims: {batch: dynamic, seq: 8, d_model: 32}
inputs:
  x: [batch, seq, d_model]
blocks:
  a: {query: x, heads: 4, kv_heads: 2, mask: causal, rope: {theta: 10000.0}}
  b: {query: a, heads: 4, kv_heads: 2, mask: causal & sliding(4)}
outputs:
  y: b
"""


def parameter_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of parameter data held inside ``proto`` (any of the data fields)."""
    total = 0
    for t in proto.graph.initializer:
        if is_parameter(t.name):
            total += (len(t.raw_data) + 4 * len(t.float_data) + 4 * len(t.int32_data)
                      + 8 * len(t.double_data) + 8 * len(t.int64_data))
    return total


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record what the graph passes see: every model given to a pass or to shape inference
    (it fails if one holds parameter bytes) and every tensor whose data is read."""
    seen: dict[str, list] = {"passes": [], "read": [], "inferred": 0}
    for cls in GRAPH_PASSES.values():
        original = cls.run

        def run(self, program, _original=original, _name=cls.name):
            assert parameter_bytes(program) == 0, f"{_name} was given weight bytes"
            seen["passes"].append(_name)
            result = _original(self, program)
            assert parameter_bytes(result.program) == 0, f"{_name} made weight bytes"
            return result

        monkeypatch.setattr(cls, "run", run)
    to_array = numpy_helper.to_array

    def reading(tensor, *args, **kwargs):
        seen["read"].append(tensor.name)
        return to_array(tensor, *args, **kwargs)

    monkeypatch.setattr(numpy_helper, "to_array", reading)
    infer = onnx.shape_inference.infer_shapes

    def inferring(model, *args, **kwargs):
        assert parameter_bytes(model) == 0, "shape inference was given weight bytes"
        seen["inferred"] += 1
        return infer(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", inferring)
    return seen


@pytest.mark.parametrize("options", OPTIONS, ids=["portable", "ort", "block"])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_graph_passes_never_read_weights(path: Path, options: CompileOptions,
                                         spy: dict[str, list]) -> None:
    detached, _ = compile_detached(load_spec(path), options=options)
    assert spy["passes"], "the graph passes ran"
    assert spy["inferred"] >= 1, "fold-constants ran shape inference"
    read_params = [n for n in spy["read"] if is_parameter(n)]
    assert read_params == [], f"graph passes read the weights {read_params}"
    stubs = detached.stubs()
    assert stubs and {t.name for t in stubs} == set(detached.weights)
    assert parameter_bytes(detached.proto) == 0


def test_reading_a_stub_fails() -> None:
    detached, _ = compile_detached(parse_spec(TWO_BLOCKS))
    stub = detached.stubs()[0]
    with pytest.raises((onnx.checker.ValidationError, OSError)):
        numpy_helper.to_array(stub)


def test_checker_runs_on_the_weight_free_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker is given no weight bytes, still catches a broken graph, and sees the
    parameters as typed inputs."""
    checked: list[onnx.ModelProto] = []
    check = onnx.checker.check_model

    def checking(model, *args, **kwargs):
        assert parameter_bytes(model) == 0
        checked.append(model)
        return check(model, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", checking)
    detached, _ = compile_detached(parse_spec(TWO_BLOCKS))
    assert len(checked) == 1
    inputs = {i.name for i in checked[0].graph.input}
    assert set(detached.weights) <= inputs
    broken = checker_view(detached.proto)
    broken.graph.node[0].input[0] = "no_such_value"
    with pytest.raises(onnx.checker.ValidationError):
        check(broken, full_check=True)


def test_weights_are_not_copied() -> None:
    """The arrays the model is built from are the caller's (same memory) when no IR pass
    rewrites weights (fold-scale scales q, fuse-qkv concatenates)."""
    model = parse_spec(TWO_BLOCKS)
    weights = seeded_weights(model)
    passes = ("canonicalize-masks", "dead-outputs", "share-computations", "fold-constants")
    detached, _ = compile_detached(model, weights, CompileOptions(passes=passes))
    for name, array in detached.weights.items():
        assert np.shares_memory(array, weights[name]), name


def test_attached_model_is_the_same_bytes() -> None:
    """``compile_model`` (weights attached at the end) equals a model whose graph passes ran
    with the weights inline, tensor for tensor, and keeps them in graph order."""
    model = parse_spec(TWO_BLOCKS)
    proto = compile_model(model)
    assert parameter_bytes(proto) == sum(a.nbytes for a in detached_weights(model).values())
    assert not any(is_stub(t) for t in proto.graph.initializer)
    # the inline model's detached form attaches back to the very same bytes
    again = detach_proto(proto)
    assert parameter_bytes(again.proto) == 0
    assert model_bytes(again.attach()) == model_bytes(proto)


def detached_weights(model) -> dict[str, np.ndarray]:
    return compile_detached(model)[0].weights


def test_ir_after_graph_pass_lowers_without_weights(spy: dict[str, list]) -> None:
    model = parse_spec(TWO_BLOCKS)
    text = ir_after(model, seeded_weights(model), "fold-constants")
    assert "float32[64,32] a.qkv_proj.weight" in text  # listed by type and shape
    assert not [n for n in spy["read"] if is_parameter(n)]
    # the same text as for the model compiled with the same pipeline
    assert text.split("initializers:")[1] == graph_text(compile_model(model)).split(
        "initializers:")[1]


def test_graph_pass_copies_hold_no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies the graph passes make (they never mutate their input) are of the
    weight-free model."""
    from attndsl.lower.graph_passes import graph_utils

    copies: list[int] = []
    real = graph_utils.copy_model

    def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
        copies.append(parameter_bytes(proto))
        return real(proto)

    for module in ("share_computations", "fold_constants"):
        monkeypatch.setattr(f"attndsl.lower.graph_passes.{module}.copy_model", copy_model)
    compile_module.compile_model(parse_spec(TWO_BLOCKS))
    assert copies and max(copies) == 0
