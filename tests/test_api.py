"""The public Python API: every function, ``Spec`` building / editing / writing, errors, and
``verify`` against the reference with numbers."""

from __future__ import annotations

import ast as pyast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import attndsl
from attndsl import AttnDSLError, Spec, SpecError, SpecErrors, SpecSyntaxError, api, cli
from attndsl.errors import InputError, LoweringError, RuntimeUnavailable, WeightsError
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, model_bytes
from attndsl.reference import run_reference
from attndsl.weights import load_weights, seeded_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GPT2 = EXAMPLES / "gpt2_causal.attn"
MISTRAL = EXAMPLES / "mistral_block.yaml"
BERT = EXAMPLES / "bert_encoder.yaml"
ALL_SPECS = sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*.attn"), *(ROOT / "specs").glob(
    "*.yaml"), *(ROOT / "specs").glob("*.attn"), *(ROOT / "tests" / "golden").glob("*.yaml")])


def tiny() -> Spec:
    """A small spec built in Python: GQA, a sliding causal mask, soft-capping, RoPE, cache."""
    return (Spec.new("tiny", dims={"batch": "dynamic", "seq": "dynamic", "d_model": 32})
            .add_input("x", ["batch", "seq", "d_model"])
            .add_block("attn", query="x", heads=4, kv_heads=2, mask="causal & sliding(4)",
                       score=["softcap(20.0)"], rope={"theta": 500.0}, cache=True)
            .add_output("y", "attn")
            .add_output("probs", "attn.weights"))


# ---------------------------------------------------------------- the public surface


def test_public_names_are_exported_typed_and_documented():
    for name in attndsl.__all__:
        obj = getattr(attndsl, name)
        if name == "__version__":
            continue
        assert obj.__doc__, name
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, name
            for p in sig.parameters.values():
                assert p.annotation is not inspect.Parameter.empty, (name, p.name)
                assert p.kind is not inspect.Parameter.VAR_KEYWORD, (name, p.name)
    for name in api.__all__:
        assert hasattr(api, name), name
    methods = [m for n, m in vars(Spec).items() if not n.startswith("_") and callable(m)]
    assert len(methods) >= 15
    for m in methods:
        m = getattr(m, "__func__", m)
        assert m.__doc__, m.__name__


def test_compile_is_the_function_even_after_the_compile_module_is_imported():
    import attndsl.lower.compile  # noqa: F401  (the lowering's module of that name)

    assert inspect.isfunction(attndsl.compile)
    assert callable(attndsl.compile) and attndsl.compile.__module__ == "attndsl.api._compile"


def test_import_is_light():
    """``import attndsl`` (and so the command line's ``--help``) loads neither onnx
    nor onnxruntime; the functions import them when they need them."""
    code = ("import sys, attndsl, attndsl.cli; "
            "print(sorted({'onnx', 'onnxruntime', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"
    from attndsl.summary import DEFAULT_TILE, Summary

    assert attndsl.Summary is Summary and api.Summary is Summary
    assert inspect.signature(attndsl.check).parameters["tile_size"].default == DEFAULT_TILE


def test_cli_imports_neither_onnx_nor_onnxruntime():
    tree = pyast.parse((ROOT / "attndsl" / "cli.py").read_text())
    modules = set()
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, pyast.ImportFrom) and node.level == 0:
            modules.add((node.module or "").split(".")[0])
        elif isinstance(node, pyast.ImportFrom):  # relative: the library modules it uses
            modules.add(f".{node.module}" if node.module else ".")
    assert not modules & {"onnx", "onnxruntime"}
    assert {m for m in modules if m.startswith(".")} <= {".", ".errors"}, modules


# ---------------------------------------------------------------- compile


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_compile_gives_the_bytes_of_the_compiler(path):
    want = model_bytes(compile_model(attndsl.load_spec(path)))
    assert model_bytes(attndsl.compile(path)) == want
    assert model_bytes(attndsl.compile(Spec.load(path))) == want
    assert model_bytes(attndsl.compile(str(path))) == want


@pytest.mark.parametrize("options", [
    {"passes": ()}, {"passes": "fuse-qkv"}, {"sparse": "dense"},
    {"sparse": "block", "block_size": 4}, {"target": "ort"}, {"target": "ort", "opset": 24},
    {"opset": 17, "seq_hint": 64}])
def test_compile_options_give_the_bytes_of_the_compiler(options):
    model = attndsl.load_spec(MISTRAL)
    opts = dict(options)
    if isinstance(opts.get("passes"), str):
        opts["passes"] = tuple(opts["passes"].split(","))
    want = model_bytes(compile_model(model, options=CompileOptions(**opts)))
    assert model_bytes(attndsl.compile(model, **options)) == want


def test_compile_with_weights_arrays_and_file(tmp_path):
    model = attndsl.load_spec(BERT)
    rng = np.random.default_rng(5)
    weights = {n: rng.standard_normal(s).astype(np.float32)
               for n, s in model.weight_shapes().items()}
    np.savez(tmp_path / "w.npz", **weights)
    from_arrays = attndsl.compile(BERT, weights=weights, passes=())
    from_file = attndsl.compile(BERT, weights=tmp_path / "w.npz", passes=())
    assert model_bytes(from_arrays) == model_bytes(from_file)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in from_file.graph.initializer}
    for name, value in weights.items():
        np.testing.assert_array_equal(inits[name], value)
    with pytest.raises(WeightsError, match="missing array"):
        attndsl.compile(BERT, weights={"nothing": np.zeros(3, np.float32)})


@pytest.mark.parametrize("options, error, message", [
    ({"opset": 16}, LoweringError, "unsupported ONNX opset 16 for the portable target"),
    ({"opset": 23}, LoweringError, "unsupported ONNX opset 23 for the portable target"),
    ({"opset": "18"}, AttnDSLError, "opset must be an int"),
    ({"target": "gpu"}, LoweringError, "unknown target 'gpu'"),
    ({"sparse": "sparse"}, LoweringError, "unknown sparse strategy 'sparse'"),
    ({"sparse": "block", "block_size": 0}, LoweringError, "block-size must be a positive"),
    ({"passes": ["fuse-qvk"]}, AttnDSLError, "unknown pass 'fuse-qvk'; did you mean 'fuse-qkv'"),
    ({"passes": "fold-scale,nope"}, AttnDSLError, "unknown pass 'nope'"),
    ({"passes": [3]}, AttnDSLError, "passes must be pass names"),
    ({"weights": 3}, AttnDSLError, "weights must be a file path or arrays by name"),
    ({"weights": "missing.npz"}, WeightsError, "no such file"),
])
def test_bad_compile_option_is_an_attndsl_error(options, error, message):
    with pytest.raises(error) as info:
        attndsl.compile(GPT2, **options)
    assert message in str(info.value)
    assert isinstance(info.value, AttnDSLError)


def test_bad_spec_argument():
    with pytest.raises(AttnDSLError, match="expected a spec path, a Spec or a Model"):
        attndsl.compile(42)  # type: ignore[arg-type]
    with pytest.raises(AttnDSLError, match="Spec.parse"):
        attndsl.compile(MISTRAL.read_text())
    with pytest.raises(AttnDSLError, match="no such file"):
        attndsl.compile("nope.yaml")


def test_compile_to_writes_atomically_and_reports(tmp_path):
    out = tmp_path / "m.onnx"
    r = attndsl.compile_to(GPT2, out, opset=17)
    assert r.path == out and out.stat().st_size == r.size
    assert out.read_bytes() == model_bytes(attndsl.compile(GPT2, opset=17))
    assert r.parameters == 148_224 and r.model == attndsl.load_spec(GPT2)
    assert [e.block for e in r.explanations] == ["attn"]
    assert {o.domain or "ai.onnx": o.version for o in r.proto.opset_import}["ai.onnx"] == 17
    out.write_bytes(b"previous")
    with pytest.raises(LoweringError):
        attndsl.compile_to(GPT2, out, opset=23)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    missing = tmp_path / "no" / "dir" / "m.onnx"
    with pytest.raises(AttnDSLError, match=f"cannot write '{missing}': No such file"):
        attndsl.compile_to(GPT2, missing)


# ---------------------------------------------------------------- run, execute


def test_run_random_inputs_shapes_and_determinism():
    out = attndsl.run(MISTRAL, sizes={"seq": 5, "batch": 3}, past_len=2, seed=1)
    assert {k: v.shape for k, v in out.items()} == {
        "y": (3, 5, 128), "attn.present_key": (3, 2, 7, 16), "attn.present_value": (3, 2, 7, 16)}
    again = attndsl.run(MISTRAL, sizes={"seq": 5, "batch": 3}, past_len=2, seed=1)
    for name in out:
        np.testing.assert_array_equal(out[name], again[name])


def test_run_given_inputs_matches_the_reference(tmp_path):
    model = attndsl.load_spec(BERT)
    inputs = random_inputs(model, {"batch": 2, "seq": 6}, seed=3)
    want = run_reference(model, load_weights(model), inputs)["y"]
    np.testing.assert_allclose(attndsl.run(BERT, inputs)["y"], want, atol=1e-4)
    np.savez(tmp_path / "in.npz", **inputs)
    by_file = attndsl.run(BERT, tmp_path / "in.npz")
    np.testing.assert_allclose(by_file["y"], want, atol=1e-4)


def test_run_onnx_file_and_modelproto(tmp_path):
    spec = tiny()
    r = attndsl.compile_to(spec, tmp_path / "t.onnx")
    from_file = attndsl.execute(tmp_path / "t.onnx", sizes={"seq": 6}, seed=2)
    from_proto = attndsl.execute(r.proto, sizes={"seq": 6}, seed=2)
    from_spec = attndsl.execute(spec, sizes={"seq": 6}, seed=2)
    assert from_file.model == from_proto.model == spec.model()
    assert from_file.provider == "CPUExecutionProvider" and from_file.note is None
    for name, value in from_spec.outputs.items():
        np.testing.assert_array_equal(from_file.outputs[name], value)
        np.testing.assert_array_equal(from_proto.outputs[name], value)


def test_run_errors():
    with pytest.raises(AttnDSLError, match="unknown dim 'sq'"):
        attndsl.run(MISTRAL, sizes={"sq": 3})
    with pytest.raises(AttnDSLError, match="sizes must map dim names to ints"):
        attndsl.run(MISTRAL, sizes={"seq": "3"})
    with pytest.raises(AttnDSLError, match="past_len must be a non-negative integer"):
        attndsl.run(MISTRAL, past_len=-1)
    with pytest.raises(RuntimeUnavailable, match="unknown execution provider 'tpu'"):
        attndsl.run(MISTRAL, provider="tpu")
    with pytest.raises(InputError, match="missing input"):
        attndsl.run(BERT, {"x": np.zeros((1, 3, 128), np.float32)})
    with pytest.raises(InputError, match="not produced by attndsl"):
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["a"], ["b"])], "g",
            [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])])
        attndsl.run(onnx.helper.make_model(graph))


# ---------------------------------------------------------------- verify


def test_verify_numbers_are_the_max_abs_errors_against_the_reference(tmp_path):
    """With no passes the model holds the spec's weights as they are: the report's numbers
    are exactly max |ONNX Runtime - float64 reference| per output."""
    path = tmp_path / "g.onnx"
    attndsl.compile_to(GPT2, path, passes=())
    result = attndsl.execute(path, sizes={"seq": 9}, seed=7)
    report = attndsl.verify(result)
    model = attndsl.load_spec(GPT2)
    want = run_reference(model, seeded_weights(model), result.inputs)
    assert [c.name for c in report.checks] == ["y", "probs"]
    for c in report.checks:
        err = float(np.max(np.abs(result.outputs[c.name].astype(np.float64) - want[c.name])))
        assert c.max_abs_error == pytest.approx(err, rel=1e-9, abs=1e-15)
        assert 0 < c.max_abs_error < 1e-5 and c.ok and not c.missing
    assert report.passed and report.failed == () and report.tolerance == 1e-4
    strict = attndsl.verify(result, tolerance=0.0)
    assert not strict.passed and strict.failed == ("y", "probs")


def test_verify_accounts_for_the_passes_and_targets():
    for options in ({}, {"passes": "fuse-qkv"}, {"target": "ort", "opset": 23},
                    {"sparse": "block", "block_size": 4}):
        report = attndsl.verify(MISTRAL, sizes={"seq": 11}, past_len=3, **options)
        assert report.passed, (options, report)
        assert set(report.max_errors) == {"y", "attn.present_key", "attn.present_value"}


def test_verify_detects_a_model_that_is_not_its_spec(tmp_path):
    proto = attndsl.compile(GPT2)
    for p in proto.metadata_props:
        if p.key == "attndsl.spec":
            p.value = p.value.replace("mask causal", "mask all")
    report = attndsl.verify(proto, sizes={"seq": 7})
    assert not report.passed and "probs" in report.failed
    assert report.max_errors["probs"] > 1e-2


def test_verify_float16_tolerance(tmp_path):
    spec = Spec.load(EXAMPLES / "gpt2_causal.yaml").with_settings(dtype="float16")
    report = attndsl.verify(spec, sizes={"seq": 17})
    assert report.tolerance == 2e-2 and report.passed
    assert max(report.max_errors.values()) > 1e-4  # float16 is not float32


def test_verify_reports_missing_and_misshapen_outputs():
    result = attndsl.execute(GPT2, sizes={"seq": 4})
    outputs = dict(result.outputs)
    del outputs["probs"]
    outputs["y"] = outputs["y"][:, :2]
    report = api.compare(api.RunResult(result.model, result.proto, result.inputs, outputs,
                                       result.provider))
    by_name = {c.name: c for c in report.checks}
    assert by_name["probs"].missing and not by_name["probs"].ok
    assert by_name["y"].max_abs_error == float("inf") and not by_name["y"].ok
    assert report.failed == ("y", "probs")


# ---------------------------------------------------------------- check, ir, convert, draw


def test_check_summary_as_data():
    s = attndsl.check(GPT2, length=64)
    assert s.params == 148_224 and s.sizes == {"batch": 1, "seq": 64, "d_model": 192}
    (info,) = s.blocks
    assert (info.attended, info.cells, info.q_len, info.k_len) == (24_960, 49_152, 64, 64)
    assert info.tiles == (0, 12, 0)
    assert attndsl.check(GPT2, sizes={"seq": 64}) == s
    cached = attndsl.check(MISTRAL, sizes={"seq": 8, "batch": 2}, past_len=8, tile_size=4)
    assert cached.blocks[0].k_len == 16 and cached.tile == 4 and cached.sizes["batch"] == 2


def test_check_prints_what_the_command_prints(capsys):
    assert cli.main(["check", str(GPT2), "--len", "64", "--tile-size", "16"]) == 0
    assert capsys.readouterr().out == api.format_summary(
        attndsl.check(GPT2, length=64, tile_size=16))


@pytest.mark.parametrize("options, message", [
    ({"tile_size": 0}, "tile_size must be a positive integer"),
    ({"past_len": -2}, "past_len must be a non-negative integer"),
    ({"length": 8, "sizes": {"seq": 8}}, "give sizes or length, not both"),
    ({"sizes": {"seq": 0}}, "dim 'seq' must be positive"),
    ({"sizes": {"d_model": 3}}, "dim 'd_model' is fixed at 192"),
])
def test_check_bad_options(options, message):
    with pytest.raises(AttnDSLError, match=message):
        attndsl.check(GPT2, **options)


def test_ir_text():
    assert attndsl.ir_text(GPT2) == attndsl.print_ir(attndsl.load_spec(GPT2))
    assert "fused qkv projection" in attndsl.ir_text(GPT2, after="fuse-qkv")
    assert "MatMul" in attndsl.ir_text(GPT2, after="share-computations")
    with pytest.raises(AttnDSLError, match="did you mean 'fuse-qkv'"):
        attndsl.ir_text(GPT2, after="fuse-qvk")


def test_convert_and_draw(tmp_path):
    out = api.convert(MISTRAL, tmp_path / "m.attn")
    assert out == tmp_path / "m.attn" and Spec.load(out) == Spec.load(MISTRAL)
    text = attndsl.draw(GPT2, length=8, heads="0")
    assert text.startswith("gpt2_causal, block attn: causal\n") and "head 0" in text
    model = attndsl.load_spec(GPT2)
    np.savez(tmp_path / "in.npz", **random_inputs(model, {"batch": 1, "seq": 6}))
    probs = attndsl.draw(GPT2, heads=[1, 2], inputs=tmp_path / "in.npz")
    assert "probabilities" in probs and "q 0..5 x k 0..5" in probs


# ---------------------------------------------------------------- Spec: reading


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_spec_load_is_load_spec_and_round_trips(path, tmp_path):
    """YAML / .attn -> Spec -> the other syntax (and the same one) -> Spec: equal trees and
    equal IR."""
    spec = Spec.load(path)
    model = attndsl.load_spec(path)
    assert spec.model() == model and spec.text == path.read_text()
    assert spec.model().spec_text == model.spec_text
    for text, syntax in ((spec.to_attn(), "attn"), (spec.to_yaml(), "yaml")):
        back = Spec.parse(text, syntax, path=str(path))
        assert back == spec and back.model() == model
    saved = spec.save(tmp_path / f"{path.stem}.attn")
    assert saved == spec and Spec.load(tmp_path / f"{path.stem}.attn").model() == model


def test_yaml_and_attn_examples_are_equal_specs():
    for yaml_path in EXAMPLES.glob("*.yaml"):
        a, b = Spec.load(yaml_path), Spec.load(yaml_path.with_suffix(".attn"))
        assert a == b and a.syntax == "yaml" and b.syntax == "attn"


def test_spec_views():
    spec = Spec.load(MISTRAL)
    assert spec.name == "mistral_block" and spec.blocks == ("attn",)
    assert spec.dims == {"batch": "dynamic", "seq": "dynamic", "d_model": 128}
    assert spec.inputs == {"x": (("batch", "seq", "d_model"), None)}
    assert spec.outputs == {"y": "attn"}
    assert spec.block("attn") == {"query": "x", "heads": 8, "kv_heads": 2,
                                  "mask": "causal & sliding(16)", "rope": {"theta": 10000.0},
                                  "cache": True}
    assert "mistral_block" in repr(spec)


def test_spec_parse_syntax_choice():
    text = MISTRAL.read_text()
    assert Spec.parse(text).syntax == "yaml"
    assert Spec.parse(Spec.load(MISTRAL).to_attn()).syntax == "attn"
    with pytest.raises(AttnDSLError, match="unknown syntax 'yml'"):
        Spec.parse(text, "yml")  # type: ignore[arg-type]
    with pytest.raises(SpecSyntaxError):
        Spec.parse(text, "attn")


# ---------------------------------------------------------------- Spec: building, editing


def test_build_from_scratch_compiles_runs_and_writes(tmp_path):
    spec = tiny()
    model = spec.model()
    block = model.block("attn")
    assert (block.heads, block.kv_heads, block.head_dim, block.cache) == (4, 2, 8, True)
    assert block.rope is not None and block.rope.theta == 500.0
    assert model.name == "tiny" and [o.name for o in model.outputs] == ["y", "probs"]
    assert model.spec_text == spec.text == spec.to_yaml()
    assert attndsl.verify(spec, sizes={"seq": 6}, past_len=2).passed
    for name in ("tiny.attn", "tiny.yaml"):
        saved = spec.save(tmp_path / name)
        assert saved.path == str(tmp_path / name) and saved.text == (tmp_path / name).read_text()
        assert Spec.load(tmp_path / name) == spec
        assert attndsl.load_spec(tmp_path / name) == model
    assert (tmp_path / "tiny.attn").read_text() == spec.to_attn()


def test_edits_return_new_specs():
    spec = Spec.load(MISTRAL)
    wide = spec.with_block("attn", heads=16, mask="causal & sliding(32)", remove=["rope"])
    assert spec.block("attn")["heads"] == 8 and spec.text == MISTRAL.read_text()
    assert list(wide.block("attn")) == ["query", "heads", "kv_heads", "mask", "cache"]
    assert wide.block("attn")["mask"] == "causal & sliding(32)"
    assert wide.model().block("attn").rope is None
    # an edited spec keeps the file's name for the model and its folder for weights
    assert wide.model().name == "mistral_block" and wide.path == str(MISTRAL)
    assert wide.text == wide.to_yaml() and wide.model().spec_text == wide.text
    again = wide.with_block("attn", heads=8, mask="causal & sliding(16)", rope={"theta": 1e4})
    assert again.model() == spec.model()
    assert again != spec and list(again.block("attn"))[-1] == "rope"  # settings keep order
    assert spec.with_block("attn", heads=16).with_block("attn", heads=8) == spec


def test_block_output_dim_input_edits():
    spec = tiny()
    spec2 = (spec.add_block("second", query="attn", heads=2, bias=True, scale=0.5)
             .add_output("z", "second"))
    assert spec2.blocks == ("attn", "second")
    m = spec2.model()
    assert m.block("second").bias and m.block("second").scale == 0.5
    replaced = spec2.replace_block("second", query="x", heads=8, mask="chunk(4)")
    assert replaced.block("second") == {"query": "x", "heads": 8, "mask": "chunk(4)"}
    assert replaced.blocks == ("attn", "second")
    assert spec2.remove_output("z").remove_block("second") == spec
    wider = spec.with_dim("d_model", 64)
    assert wider.model().block("attn").head_dim == 16
    fixed = spec.with_dim("seq", 12).with_input("x", ["batch", 12, "d_model"])
    assert fixed.model().input("x").shape == ("batch", 12, "d_model")
    assert spec.add_dim("extra", 3).remove_dim("extra") == spec
    lengths = spec.add_input("lengths", ["batch"], "int64").with_block(
        "attn", mask="causal & padding(lengths)")
    assert lengths.model().input("lengths").dtype == "int64"
    with pytest.raises(SpecError, match="unknown input 'lengths'"):
        lengths.remove_input("lengths").model()
    named = spec.with_settings(name="other", seed=3, dtype="float16")
    assert (named.model().name, named.model().seed, named.model().dtype) == ("other", 3,
                                                                          "float16")


def test_edit_errors():
    spec = tiny()
    with pytest.raises(SpecError, match="no block 'atn'; did you mean 'attn'"):
        spec.with_block("atn", heads=2)
    with pytest.raises(SpecError, match="already has a block 'attn'"):
        spec.add_block("attn", query="x", heads=2)
    with pytest.raises(SpecError, match="no output 'q'"):
        spec.remove_output("q")
    with pytest.raises(SpecError, match="already has a dim 'seq'"):
        spec.add_dim("seq", 3)
    with pytest.raises(AttnDSLError, match="'heads' must be an int, got '4'"):
        spec.with_block("attn", heads="4")  # type: ignore[arg-type]
    with pytest.raises(AttnDSLError, match="'cache' must be True or False"):
        spec.with_block("attn", cache=1)  # type: ignore[arg-type]
    with pytest.raises(AttnDSLError, match="unknown block setting 'rop'"):
        spec.with_block("attn", remove=["rop"])
    with pytest.raises(AttnDSLError, match="dim 'seq' must be an int or 'dynamic'"):
        spec.with_dim("seq", "dyn")
    with pytest.raises(AttnDSLError, match="the shape must be a list"):
        spec.with_input("x", "batch")  # type: ignore[arg-type]


def test_expression_syntax_errors_point_into_the_string():
    with pytest.raises(SpecSyntaxError) as info:
        tiny().with_block("attn", mask="causal & (sliding(4)")
    err = info.value
    assert err.span.location().startswith("<attn.mask>:1:")
    assert "causal & (sliding(4)" in str(err) and "^" in str(err)
    with pytest.raises(SpecSyntaxError, match="<attn.score>:1:"):
        tiny().with_block("attn", score="softcap(30.0,")


def test_spec_errors_have_locations_in_the_written_text():
    spec = tiny().with_block("attn", kv_heads=3).add_output("z", "nope")
    with pytest.raises(SpecErrors) as info:
        spec.model()
    lines = spec.text.splitlines()
    errors = info.value.errors
    assert [e.message for e in errors] == ["kv_heads 3 does not divide heads 4",
                                           "unknown block 'nope' in output 'z'"]
    for err in errors:
        assert err.span.location() == f"<string>:{err.span.line}:{err.span.col}"
        assert str(err).splitlines()[1] == "  " + lines[err.span.line - 1]
    only_mask = tiny().with_block("attn", mask="causal & slidng(4)")
    with pytest.raises(SpecError) as one:
        only_mask.model()
    e = one.value
    assert e.hint == "did you mean 'sliding'?"
    assert only_mask.text.splitlines()[e.span.line - 1][e.span.col - 1:].startswith("slidng(4)")


def test_errors_of_an_edited_file_are_labelled_edited():
    spec = Spec.load(MISTRAL).with_block("attn", kv_heads=3)
    with pytest.raises(SpecError) as info:
        spec.model()
    assert info.value.span.location().startswith(f"{MISTRAL} (edited):")
    assert "kv_heads 3 does not divide heads 8" in str(info.value)


def test_loading_a_bad_file_reports_what_load_spec_reports(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MISTRAL.read_text().replace("heads: 8", "heads: 8\n    heads: 9")
                   .replace("query: x", "query: xx"))
    with pytest.raises(SpecErrors) as want:
        attndsl.load_spec(bad)
    with pytest.raises(SpecErrors) as got:
        Spec.load(bad)
    assert str(got.value) == str(want.value) and "duplicate key 'heads'" in str(got.value)
    semantic = tmp_path / "semantic.yaml"
    semantic.write_text(MISTRAL.read_text().replace("kv_heads: 2", "kv_heads: 3"))
    spec = Spec.load(semantic)  # reads: the meaning is checked by model()
    with pytest.raises(SpecError, match=rf"{semantic}:\d+:\d+: error: kv_heads 3"):
        spec.model()
    with pytest.raises(SpecError, match="kv_heads 3"):  # only valid specs are saved
        spec.save(tmp_path / "out.attn")
    assert not (tmp_path / "out.attn").exists()
    with pytest.raises(AttnDSLError, match="cannot tell the syntax"):
        Spec.load(MISTRAL).save(tmp_path / "out.txt")


def test_save_keeps_a_relative_weights_path_pointing_at_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model = attndsl.load_spec(BERT)
    weights = {n: np.full(s, 0.01, np.float32) for n, s in model.weight_shapes().items()}
    np.savez(tmp_path / "a" / "w.npz", **weights)
    src = tmp_path / "a" / "bert.yaml"
    src.write_text(BERT.read_text().replace("name: bert_encoder\n", "weights: w.npz\n"))
    spec = Spec.load(src).with_block("attn", heads=4)
    assert spec.model().weights_file == str(tmp_path / "a" / "w.npz")
    assert spec.model().name == "bert"
    saved = spec.save(tmp_path / "b" / "bert.attn")
    assert 'weights "../a/w.npz"' in saved.text
    assert os.path.samefile(saved.model().weights_file, tmp_path / "a" / "w.npz")
    inits = {t.name: onnx.numpy_helper.to_array(t)
             for t in attndsl.compile(saved, passes=()).graph.initializer}
    for name in model.weight_shapes():
        assert np.all(inits[name] == np.float32(0.01)), name
