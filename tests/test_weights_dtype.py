"""Weights in the checkpoint's dtype: a float16 model compiled from float16 / bfloat16 /
float32 safetensors files (written by torch) keeps float16 end to end, with the exact values
torch gives, the conversion recorded in the model's metadata, and no float32 copy of the
weights in memory; quantized tensors are refused by name."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import attndsl
from attndsl import parse_spec
from attndsl.errors import WeightsError
from attndsl.lower.compile import CompileOptions, compile_detached
from attndsl.weights import describe_conversions, load_weights

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")

_SPEC = """\
attndsl: 1
name: half
dtype: {dtype}
dims: {{batch: dynamic, seq: dynamic, d_model: {d}}}
inputs:
  x: [batch, seq, d_model]
blocks:
  attn: {{query: x, heads: {h}, kv_heads: {g}, head_dim: {hd}, mask: causal}}
outputs:
  y: attn
"""


def _model(dtype: str = "float16", d: int = 32, h: int = 4, g: int = 2, hd: int = 12):
    return parse_spec(_SPEC.format(dtype=dtype, d=d, h=h, g=g, hd=hd), "half.yaml")


def _torch_weights(model, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=gen) * 0.3
            for name, shape in sorted(model.weight_shapes().items())}


def _initializers(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The parameters by the spec's names (the fuse-qkv pass stacks q, k, v in one)."""
    got = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    qkv = got.pop("attn.qkv_proj.weight", None)
    if qkv is not None:
        q, kv = 4 * 12, 2 * 12
        got.update({"attn.q_proj.weight": qkv[:q], "attn.k_proj.weight": qkv[q:q + kv],
                    "attn.v_proj.weight": qkv[q + kv:]})
    return got


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


@pytest.mark.parametrize("file_dtype", ["float32", "float16", "bfloat16"])
def test_float16_model_keeps_float16_weights_exactly(tmp_path: Path, file_dtype: str) -> None:
    model = _model()
    tensors = _torch_weights(model)
    path = tmp_path / "w.safetensors"
    st_torch.save_file({k: v.to(getattr(torch, file_dtype)) for k, v in tensors.items()},
                       str(path))
    loaded = load_weights(model, path)
    assert {a.dtype for a in loaded.values()} == {np.dtype(np.float16)}
    proto = attndsl.compile(model, weights=str(path))
    got = _initializers(proto)
    for name, t in tensors.items():
        # What torch gives converting the file's tensor to float16 (one rounding).
        want = t.to(getattr(torch, file_dtype)).half().numpy()
        if name == "attn.q_proj.weight":  # fold-scale: times 1/sqrt(12) in float64, one rounding
            want = (want.astype(np.float64) * model.blocks[0].scale).astype(np.float16)
        assert got[name].dtype == np.float16, name
        assert got[name].view(np.uint16).tolist() == want.view(np.uint16).tolist(), name
    meta = _metadata(proto)
    n = len(tensors)
    if file_dtype == "float16":
        assert "attndsl.weights_conversions" not in meta  # read as it is: nothing converted
    else:
        code = {"float32": "F32", "bfloat16": "BF16"}[file_dtype]
        assert meta["attndsl.weights_conversions"] == (
            f"{code} -> float16: {n} tensors, rounded to nearest even")


def test_float32_model_records_exact_widening(tmp_path: Path) -> None:
    model = _model("float32")
    tensors = _torch_weights(model, seed=1)
    path = tmp_path / "w.safetensors"
    st_torch.save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(path))
    proto = attndsl.compile(model, weights=str(path))
    got = _initializers(proto)
    for name, t in tensors.items():
        want = t.to(torch.bfloat16).float().numpy()
        if name == "attn.q_proj.weight":
            want = (want.astype(np.float64) * model.blocks[0].scale).astype(np.float32)
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], want)
    assert _metadata(proto)["attndsl.weights_conversions"] == (
        f"BF16 -> float32: {len(tensors)} tensors, exact")


def test_compile_to_records_conversions_with_external_data(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "w.safetensors"
    st_torch.save_file({k: v.to(torch.bfloat16) for k, v in _torch_weights(model).items()},
                       str(path))
    r = attndsl.compile_to(model, tmp_path / "m.onnx", weights=str(path),
                           external_data="always")
    assert r.data_path is not None
    meta = _metadata(onnx.load(str(tmp_path / "m.onnx"), load_external_data=False))
    assert meta["attndsl.weights_conversions"].startswith("BF16 -> float16: ")


def test_seeded_and_array_weights_record_nothing() -> None:
    model = _model()
    assert "attndsl.weights_conversions" not in _metadata(attndsl.compile(model))


def test_overflow_is_counted_in_the_record() -> None:
    from attndsl.safetensors_io import Conversion

    cs = [Conversion("a", "F32", "float16", False, 2), Conversion("b", "F32", "float16", False),
          Conversion("c", "BF16", "float32", True)]
    assert describe_conversions(cs) == (
        "BF16 -> float32: 1 tensor, exact\n"
        "F32 -> float16: 2 tensors, rounded to nearest even, 2 values overflowed to inf")
    assert describe_conversions([]) == ""


@pytest.mark.parametrize("bad", ["int8", "float8_e4m3fn"])
def test_quantized_tensors_are_named(tmp_path: Path, bad: str) -> None:
    model = _model()
    tensors = {k: v.half() for k, v in _torch_weights(model).items()}
    victim = "attn.k_proj.weight"
    tensors[victim] = tensors[victim].float().to(getattr(torch, bad))
    path = tmp_path / "w.safetensors"
    st_torch.save_file(tensors, str(path))
    with pytest.raises(WeightsError) as err:
        attndsl.compile(model, weights=str(path))
    text = str(err.value)
    assert victim in text
    assert {"int8": "I8", "float8_e4m3fn": "F8_E4M3"}[bad] in text


def test_float16_compile_holds_no_float32_copy(tmp_path: Path) -> None:
    """~50 MB of float16 weights: reading and compiling them (weight-free model, arrays
    held aside) allocates about the weights once, not the 2x a float32 copy would add."""
    model = _model(d=2560, h=20, g=20, hd=128)  # 4 x 2560 x 2560 float16: 52 MB
    nbytes = sum(2 * int(np.prod(s)) for s in model.weight_shapes().values())
    path = tmp_path / "w.safetensors"
    gen = torch.Generator().manual_seed(0)
    st_torch.save_file({n: torch.randn(*s, generator=gen).half()
                        for n, s in model.weight_shapes().items()}, str(path))
    tracemalloc.start()
    try:
        weights = load_weights(model, path)
        detached, _ = compile_detached(model, weights, CompileOptions())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(a.dtype == np.float16 for a in detached.weights.values())
    assert sum(a.nbytes for a in detached.weights.values()) >= nbytes
    # The weights once (float16), plus the scaled q and the fused qkv projection the IR
    # passes build while the originals are still held (about 1.9x in all); a float32 copy of
    # the weights would add 2x on top (3x or more).
    print(f"peak {peak / 1e6:.1f} MB for {nbytes / 1e6:.1f} MB of weights")
    assert peak < 2.5 * nbytes, (peak, nbytes)
