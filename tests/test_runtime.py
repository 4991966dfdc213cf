"""ONNX Runtime sessions: providers, fallbacks and input checking."""

from __future__ import annotations

import numpy as np
import pytest

from attndsl.api import parse_spec
from attndsl.errors import InputError, RuntimeUnavailable
from attndsl.lower.compile import compile_model, model_bytes, save_model_atomic
from attndsl.runtime import available_providers, make_session, run_session

SPEC = """\
attndsl: 1
dims: {batch: dynamic, seq: dynamic}
inputs:
  x: [batch, seq, 16]
  lens: {shape: [batch], dtype: int64}
blocks:
  attn: {query: x, heads: 2, mask: "causal & padding(lens)"}
outputs: {y: attn, p: attn.weights}
"""


@pytest.fixture(scope="module")
def proto():
    return compile_model(parse_spec(SPEC, "x.yaml"))


def feed(batch: int = 2, seq: int = 3) -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((batch, seq, 16)).astype(np.float32)
    return {"x": x, "lens": np.full(batch, seq, np.int64)}


def test_cpu_always_available():
    assert "cpu" in available_providers()


@pytest.mark.parametrize("form", ["proto", "bytes", "path"])
def test_session_from_proto_bytes_path(proto, tmp_path, form):
    path = tmp_path / "m.onnx"
    save_model_atomic(proto, path)
    model = {"proto": proto, "bytes": model_bytes(proto), "path": str(path)}[form]
    session = make_session(model, "cpu")
    assert session.chosen_provider == "cpu" and session.fallback_note is None
    out = run_session(session, feed())
    assert list(out) == ["y", "p"]
    assert out["y"].shape == (2, 3, 16) and out["p"].shape == (2, 2, 3, 3)


def test_auto_reports_choice(proto):
    session = make_session(proto, "auto")
    if "cuda" in available_providers():
        assert session.chosen_provider == "cuda"
    else:
        assert session.chosen_provider == "cpu"
        assert session.fallback_note == "CUDA not available; running on CPU"


@pytest.mark.skipif("cuda" in available_providers(), reason="CUDA is available here")
def test_cuda_unavailable_is_an_error(proto):
    with pytest.raises(RuntimeUnavailable, match="CUDA execution provider is not available"):
        make_session(proto, "cuda")


def test_unknown_provider(proto):
    with pytest.raises(RuntimeUnavailable, match="unknown execution provider 'cdua'") as err:
        make_session(proto, "cdua")
    assert "did you mean 'cuda'" in str(err.value)


def test_input_errors(proto):
    session = make_session(proto)
    good = feed()
    with pytest.raises(InputError, match="missing input"):
        run_session(session, {"x": good["x"]})
    with pytest.raises(InputError, match="unknown input 'lenz'.*did you mean 'lens'"):
        run_session(session, {**good, "lenz": good["lens"]})
    with pytest.raises(InputError, match="'x' has dtype float64"):
        run_session(session, {**good, "x": good["x"].astype(np.float64)})
    with pytest.raises(InputError, match="ONNX Runtime rejected"):
        run_session(session, {**good, "x": good["x"][..., :8]})
    with pytest.raises(InputError, match="running the model failed"):
        run_session(session, {**good, "lens": np.ones(3, np.int64)})
