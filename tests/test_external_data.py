"""Weights as ONNX external data (``lower.external_data``): chosen above a threshold or on
request, written atomically and deterministically, loaded, run and verified like any other
model; plus one slow test of a model over 2 GiB."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from attndsl import cli, parse_spec
from attndsl.api import load_spec
from attndsl.errors import AttnDSLError, LoweringError
from attndsl.inputs import random_inputs
from attndsl.lower import external_data
from attndsl.lower.compile import CompileOptions, compile_model, compile_to_file, model_bytes
from attndsl.lower.external_data import data_path_for
from attndsl.lower.pipeline import model_after
from attndsl.lower.progress import Progress
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
attndsl: 1
name: ext
dims: {batch: dynamic, seq: dynamic, d_model: 64}
inputs:
  x: [batch, seq, d_model]
blocks:
  a: {query: x, heads: 4, kv_heads: 2, mask: causal, rope: {theta: 10000.0}, cache: true}
  b: {query: a, heads: 4, mask: causal & sliding(4)}
outputs:
  y: b
"""


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def save(tmp: Path, name: str = "m.onnx", **kwargs) -> external_data.SavedModel:
    kwargs.setdefault("progress", Progress.silent())
    return compile_to_file(parse_spec(SPEC), tmp / name, **kwargs)[0]


def test_always_writes_one_data_file_that_ort_runs(tmp_path: Path) -> None:
    saved = save(tmp_path, external="always")
    assert saved.data_path == tmp_path / "m.onnx.data"
    assert files(tmp_path) == ["m.onnx", "m.onnx.data"]
    model = parse_spec(SPEC)
    params = sum(math.prod(s) for s in model.weight_shapes().values())
    assert saved.data_bytes >= params * 4 and saved.data_path.stat().st_size == saved.data_bytes
    assert (tmp_path / "m.onnx").stat().st_size < params * 4  # no weight bytes inline
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    refs = [t for t in proto.graph.initializer
            if t.data_location == onnx.TensorProto.EXTERNAL]
    after = model_after(model)  # the parameters as the IR passes left them (fused qkv)
    assert {t.name for t in refs} == set(after.weight_shapes())  # constants stay inline
    for t in refs:
        entries = {e.key: e.value for e in t.external_data}
        assert entries["location"] == "m.onnx.data"
        if int(entries["length"]) >= external_data.LARGE_TENSOR:
            assert int(entries["offset"]) % external_data.LARGE_ALIGN == 0
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)
    # ORT by path, against the reference with the weights read back from the data file
    inputs = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=3)
    got = run_session(make_session(tmp_path / "m.onnx"), inputs)
    full = onnx.load(tmp_path / "m.onnx")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    inline = compile_model(model)
    assert model_bytes(full) != model_bytes(inline)  # sanity: the references differ...
    want_weights = {t.name: onnx.numpy_helper.to_array(t) for t in inline.graph.initializer}
    for name in after.weight_shapes():  # ... the weights do not
        np.testing.assert_array_equal(weights[name], want_weights[name])
    want = run_reference(after, {n: weights[n] for n in after.weight_shapes()}, inputs)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4)


def test_threshold_and_modes(tmp_path: Path) -> None:
    inline = model_bytes(compile_model(parse_spec(SPEC)))
    (tmp_path / "auto").mkdir()
    auto = save(tmp_path / "auto", external="auto")
    assert auto.data_path is None and (tmp_path / "auto" / "m.onnx").read_bytes() == inline
    (tmp_path / "low").mkdir()
    low = save(tmp_path / "low", external="auto", external_threshold=1000)
    assert low.data_path is not None and low.data_path.exists()
    (tmp_path / "high").mkdir()
    high = save(tmp_path / "high", external="auto", external_threshold=len(inline) * 2)
    assert high.data_path is None
    (tmp_path / "never").mkdir()
    never = save(tmp_path / "never", external="never", external_threshold=1000)
    assert never.data_path is None
    with pytest.raises(AttnDSLError, match="unknown external data mode"):
        save(tmp_path, external="sometimes")
    with pytest.raises(AttnDSLError, match="positive"):
        save(tmp_path, external="auto", external_threshold=0)


ALL_SPECS = sorted([*(ROOT / "examples").glob("*.yaml"), *(ROOT / "specs").glob("*.yaml"),
                    *(ROOT / "specs").glob("*.attn")])


@pytest.mark.parametrize("options", [CompileOptions(), CompileOptions(passes=(), target="ort")],
                         ids=["default", "no-opt-ort"])
@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: p.name)
def test_streamed_inline_file_is_the_serialized_model(tmp_path: Path, path: Path,
                                                      options: CompileOptions) -> None:
    """The inline file, streamed from the weight-free model and the arrays, is byte for
    byte ``model_bytes(compile_model(...))``."""
    model = load_spec(path)
    saved, _ = compile_to_file(model, tmp_path / "m.onnx", options=options,
                               progress=Progress.silent())
    want = model_bytes(compile_model(model, options=options))
    assert saved.model_bytes == len(want)
    assert (tmp_path / "m.onnx").read_bytes() == want


def test_never_over_the_protobuf_limit_is_an_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external_data, "PROTOBUF_LIMIT", 1000)
    with pytest.raises(LoweringError, match="2 GiB limit"):
        save(tmp_path, external="never")
    assert files(tmp_path) == []


def test_deterministic(tmp_path: Path) -> None:
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        save(tmp_path / sub, external="always")
    for name in ("m.onnx", "m.onnx.data"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          error: type[BaseException]) -> None:
    """An error while writing leaves no temporary file and the earlier model intact."""
    save(tmp_path, external="always")
    before = {n: (tmp_path / n).read_bytes() for n in files(tmp_path)}
    calls = []

    def failing(out, data, progress):
        calls.append(len(data))
        if len(calls) == 2:
            raise error("interrupted")
        out.write(data)

    monkeypatch.setattr(external_data, "_write_chunks", failing)
    with pytest.raises((error, AttnDSLError)):
        compile_to_file(parse_spec(SPEC.replace("theta: 10000.0", "theta: 500.0")),
                        tmp_path / "m.onnx", external="always", progress=Progress.silent())
    assert files(tmp_path) == sorted(before)
    assert {n: (tmp_path / n).read_bytes() for n in files(tmp_path)} == before
    # and a new model interrupted leaves nothing at all
    with pytest.raises((error, AttnDSLError)):
        calls.clear()
        save(tmp_path, "new.onnx", external="always")
    assert files(tmp_path) == sorted(before)


def test_model_file_replaced_after_data_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[str] = []
    replace = os.replace

    def recording(src, dst):
        moved.append(Path(dst).name)
        return replace(src, dst)

    monkeypatch.setattr(external_data.os, "replace", recording)
    save(tmp_path, external="always")
    assert moved == ["m.onnx.data", "m.onnx"]


def test_cli_compile_and_run_external(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "ext.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "ext.onnx"
    assert cli.main(["compile", str(spec), "-o", str(out), "--external-data", "auto",
                     "--external-data-threshold", "4096"]) == 0
    printed = capsys.readouterr()
    assert "bytes of weights in" in printed.out and printed.err == ""
    assert data_path_for(out).exists()
    assert cli.main(["run", str(out), "--verify", "--past-len", "2"]) == 0
    assert "max abs error" in capsys.readouterr().out
    # moved elsewhere together, it still runs (the location is relative)
    moved = tmp_path / "moved"
    moved.mkdir()
    os.replace(out, moved / out.name)
    os.replace(data_path_for(out), data_path_for(moved / out.name))
    assert cli.main(["run", str(moved / out.name), "--verify"]) == 0


def test_in_memory_model_with_external_references_is_a_clear_error(tmp_path: Path) -> None:
    from attndsl.errors import InputError

    saved = save(tmp_path, external="always")
    with pytest.raises(InputError, match="by its path"):
        make_session(saved.proto)
    make_session(saved.path)  # by path it loads


def test_in_memory_model_over_the_limit_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make_session`` of a ModelProto too big to serialize goes through external data."""
    import attndsl.runtime as runtime

    model = parse_spec(SPEC)
    proto = compile_model(model)
    inputs = random_inputs(model, {"batch": 1, "seq": 4}, seed=2)
    want = run_session(make_session(proto), inputs)
    monkeypatch.setattr(runtime, "PROTOBUF_LIMIT", 1000)
    calls = []
    over = runtime._session_over_2gb

    def spying(*args):
        calls.append(args[0].ByteSize())
        return over(*args)

    monkeypatch.setattr(runtime, "_session_over_2gb", spying)
    got = run_session(make_session(proto), inputs)
    assert calls == [proto.ByteSize()]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


LARGE = """\
attndsl: 1
name: over_2gb
dims: {batch: dynamic, seq: dynamic, d_model: 12288}
inputs:
  x: [batch, seq, d_model]
blocks:
  attn: {query: x, heads: 96, mask: causal}
outputs:
  y: attn
"""


@pytest.mark.slow
def test_model_over_2gb(tmp_path: Path) -> None:
    """4 x 12288^2 float32 parameters (2.4 GB): auto writes external data; ORT runs the file
    and agrees with the reference, which reads the weights from the data file (mapped)."""
    model = parse_spec(LARGE)
    saved = compile_to_file(model, tmp_path / "big.onnx", progress=Progress.silent())[0]
    assert saved.data_path is not None and saved.data_bytes > 2 ** 31
    assert saved.model_bytes < 10 << 20
    inputs = random_inputs(model, {"batch": 1, "seq": 3}, seed=0)
    got = run_session(make_session(tmp_path / "big.onnx"), inputs)
    proto = onnx.load(tmp_path / "big.onnx", load_external_data=False)
    data = np.memmap(saved.data_path, dtype=np.uint8, mode="r")
    weights = {}
    for t in proto.graph.initializer:
        entries = {e.key: e.value for e in t.external_data}
        if "location" in entries:
            start, length = int(entries["offset"]), int(entries["length"])
            weights[t.name] = data[start:start + length].view(np.float32).reshape(t.dims)
    after = model_after(model)
    want = run_reference(after, {n: weights[n] for n in after.weight_shapes()}, inputs)
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-4)
