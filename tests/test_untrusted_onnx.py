"""``attndsl run MODEL.onnx`` on files from anyone: every bad file is refused with a message
and exit 2, and nothing outside the model's folder is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from attndsl import api
from attndsl.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "gpt2.onnx"
    api.compile_to(ROOT / "examples" / "gpt2_causal.yaml", path)
    return path


def _run(path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["run", str(path), *extra])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.err


def _external(good: Path, folder: Path, location: str = "weights.bin") -> onnx.ModelProto:
    """``good`` rewritten with every initializer as external data in ``folder``/``location``."""
    proto = onnx.load(good)
    onnx.save(proto, folder / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=1024)
    return onnx.load(folder / "m.onnx", load_external_data=False)


def _set_location(proto: onnx.ModelProto, location: str) -> None:
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location


def test_a_model_of_attndsl_runs(good, capsys):
    code, err = _run(good, capsys, "--verify")
    assert code == 0, err


def test_not_made_by_attndsl(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    code, err = _run(tmp_path / "other.onnx", capsys)
    assert code == 2 and "was not produced by attndsl" in err


@pytest.mark.parametrize("cut", [0.5, 0.99, 0.01])
def test_truncated(good, tmp_path, capsys, cut):
    data = good.read_bytes()
    (tmp_path / "t.onnx").write_bytes(data[:int(len(data) * cut)])
    code, err = _run(tmp_path / "t.onnx", capsys)
    assert code == 2 and "error:" in err


def test_garbage_and_empty(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "g.onnx").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    code, err = _run(tmp_path / "g.onnx", capsys)
    assert code == 2 and "cannot read" in err and "ONNX model" in err
    (tmp_path / "e.onnx").write_bytes(b"")
    code, err = _run(tmp_path / "e.onnx", capsys)
    assert code == 2 and "error:" in err


def test_a_directory_named_onnx(tmp_path, capsys):
    (tmp_path / "d.onnx").mkdir()
    code, err = _run(tmp_path / "d.onnx", capsys)
    assert code == 2 and "not a regular file" in err


def test_edited_spec_metadata(good, tmp_path, capsys):
    proto = onnx.load(good)
    spec = next(p for p in proto.metadata_props if p.key == "attndsl.spec")
    original = spec.value
    cases = {
        "heads: 12": "heads: 6",  # other weights
        "probs: attn.weights": "",  # one output fewer
        "d_model: 192": "d_model: 96",  # other input and weight shapes
    }
    for old, new in cases.items():
        assert old in original
        spec.value = original.replace(old, new)
        onnx.save(proto, tmp_path / "edited.onnx")
        code, err = _run(tmp_path / "edited.onnx", capsys)
        assert code == 2 and "does not match the spec in its metadata" in err, (old, err)
    spec.value = "attndsl: 1\nname: [broken"
    onnx.save(proto, tmp_path / "edited.onnx")
    code, err = _run(tmp_path / "edited.onnx", capsys)
    assert code == 2 and "attndsl.spec metadata is not valid" in err


def test_edited_graph_interface(good, tmp_path, capsys):
    proto = onnx.load(good)
    proto.graph.input[0].name = "z"
    for node in proto.graph.node:
        node.input[:] = ["z" if i == "x" else i for i in node.input]
    onnx.save(proto, tmp_path / "renamed.onnx")
    code, err = _run(tmp_path / "renamed.onnx", capsys)
    assert code == 2 and "graph inputs (z) are not the spec's (x)" in err


def test_custom_op_refused(good, tmp_path, capsys):
    proto = onnx.load(good)
    proto.graph.node.append(helper.make_node("Evil", [proto.graph.output[0].name], ["e"],
                                             domain="my.ops"))
    proto.opset_import.append(helper.make_opsetid("my.ops", 1))
    onnx.save(proto, tmp_path / "custom.onnx")
    code, err = _run(tmp_path / "custom.onnx", capsys)
    assert code == 2 and "custom domain 'my.ops' (Evil)" in err


def test_external_data_inside_the_folder_runs(good, tmp_path, capsys, monkeypatch):
    _external(good, tmp_path)
    assert (tmp_path / "weights.bin").stat().st_size > 100_000
    # attndsl reads the data itself after checking the paths, never onnx's own loader
    monkeypatch.setattr(onnx, "load_external_data_for_model",
                        lambda *a, **k: pytest.fail("onnx's external data loader ran"))
    code, err = _run(tmp_path / "m.onnx", capsys, "--verify")
    assert code == 0, err


@pytest.mark.parametrize("kind", ["absolute", "parent", "symlink", "missing", "short"])
def test_external_data_outside_the_folder(good, tmp_path, capsys, monkeypatch, kind):
    folder = tmp_path / "model"
    folder.mkdir()
    proto = _external(good, folder)
    secret = tmp_path / "secret.bin"
    secret.write_bytes((folder / "weights.bin").read_bytes())
    if kind == "absolute":
        _set_location(proto, str(secret))
    elif kind == "parent":
        _set_location(proto, "../secret.bin")
    elif kind == "symlink":
        os.symlink(secret, folder / "link.bin")
        _set_location(proto, "link.bin")
    elif kind == "missing":
        _set_location(proto, "nowhere.bin")
    else:  # a length past the end of the file
        for e in proto.graph.initializer[0].external_data:
            if e.key == "length":
                e.value = str(10**9)
    onnx.save(proto, folder / "m.onnx")
    opened: list[str] = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else "")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    code, err = _run(folder / "m.onnx", capsys)
    want = {"absolute": "absolute path", "parent": "leaves the model's folder",
            "symlink": "link out of the model's folder", "missing": "is missing",
            "short": "claims bytes"}[kind]
    assert code == 2 and want in err, err
    assert os.path.realpath(secret) not in opened


def test_file_size_bounded(good, tmp_path, capsys, monkeypatch):
    """The size is checked before a byte is parsed: a (sparse) file of 300 MB against a
    limit of 107 KB of weights plus the graph allowance."""
    big = tmp_path / "big.onnx"
    big.write_bytes(good.read_bytes())
    with open(big, "r+b") as f:
        f.truncate(300 << 20)
    monkeypatch.setenv("ATTNDSL_MAX_WEIGHTS_GIB", "0.0001")
    code, err = _run(big, capsys)
    assert code == 2 and "over the limit" in err and "for a model file" in err, err


def test_a_file_onnx_runtime_refuses(good, tmp_path, capsys):
    """A file that passes the checks but that ONNX Runtime cannot load (here: a small shape
    constant stored as external data, which ORT's shape inference cannot read) is an input
    error, not an internal one."""
    proto = onnx.load(good)
    onnx.save(proto, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    code, err = _run(tmp_path / "m.onnx", capsys)
    assert code == 2 and "ONNX Runtime cannot load" in err, err


def test_raw_initializer_swap_keeps_running(good, tmp_path, capsys):
    """Other weight values (same names and shapes) are a valid attndsl model: verify checks
    the weights the file holds."""
    proto = onnx.load(good)
    t = proto.graph.initializer[0]
    arr = numpy_helper.to_array(t) * 0.5
    t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    onnx.save(proto, tmp_path / "w.onnx")
    code, err = _run(tmp_path / "w.onnx", capsys, "--verify")
    assert code == 0, err
