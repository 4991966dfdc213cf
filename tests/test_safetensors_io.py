"""The torch-free safetensors reader and writer: agreement with the ``safetensors`` package and
with torch, sharded checkpoints, hostile files, the atomic streaming writer, laziness."""

from __future__ import annotations

import json
import os
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from attndsl import parse_spec
from attndsl import safetensors_io as sio
from attndsl.errors import WeightsError
from attndsl.safetensors_io import (
    Lazy,
    f32_to_bf16_bits,
    open_checkpoint,
    open_safetensors,
    write_safetensors,
)
from attndsl.weights import load_weights, load_weights_with_conversions, seeded_weights

torch = pytest.importorskip("torch")
st_numpy = pytest.importorskip("safetensors.numpy")
st_torch = pytest.importorskip("safetensors.torch")

RNG = np.random.default_rng(7)


def _mixed() -> dict[str, np.ndarray]:
    return {
        "b.weight": RNG.standard_normal((3, 5)).astype(np.float32),
        "a.half": RNG.standard_normal(7).astype(np.float16),
        "c.double": RNG.standard_normal((2, 2)),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.array(1.5, np.float32),
        "z": RNG.standard_normal((4, 1, 2)).astype(np.float32),
    }


def _raw(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file from a header (dict or raw bytes) and data, for hostile cases."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------- agreement with references


def test_writer_bytes_equal_the_reference_library(tmp_path: Path) -> None:
    arrays = _mixed()
    st_numpy.save_file(arrays, str(tmp_path / "ref.safetensors"))
    write_safetensors(tmp_path / "mine.safetensors", arrays)
    assert (tmp_path / "mine.safetensors").read_bytes() == \
        (tmp_path / "ref.safetensors").read_bytes()
    meta = {"format": "pt"}
    st_numpy.save_file(arrays, str(tmp_path / "ref_m.safetensors"), metadata=meta)
    write_safetensors(tmp_path / "mine_m.safetensors", arrays, metadata=meta)
    assert (tmp_path / "mine_m.safetensors").read_bytes() == \
        (tmp_path / "ref_m.safetensors").read_bytes()


def test_reads_what_the_reference_library_writes(tmp_path: Path) -> None:
    arrays = _mixed()
    path = tmp_path / "ref.safetensors"
    st_numpy.save_file(arrays, str(path), metadata={"k": "v", "format": "np"})
    with open_safetensors(path) as f:
        assert f.names() == sorted(arrays)
        assert f.metadata == {"k": "v", "format": "np"}
        for name, want in arrays.items():
            dtype, shape, nbytes = f.info(name)
            assert (shape, nbytes) == (want.shape, want.nbytes)
            got = f.read(name)
            assert got.dtype == want.dtype and np.array_equal(got, want)
        assert f.conversions == []


def test_reference_library_reads_what_we_write(tmp_path: Path) -> None:
    arrays = _mixed()
    write_safetensors(tmp_path / "w.safetensors", arrays, metadata={"b": "2", "a": "1"})
    back = st_numpy.load_file(str(tmp_path / "w.safetensors"))
    assert sorted(back) == sorted(arrays)
    assert all(np.array_equal(back[k], arrays[k]) and back[k].dtype == arrays[k].dtype
               for k in arrays)


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 1e-8,
                    3.3895314e38, 3.4028235e38, 1.00390625, 1.01171875, 1.0078125,
                    1.1754944e-38, 9.2e-41, -2.5e-45], np.float32)


def _values() -> np.ndarray:
    x = (RNG.standard_normal(5000) * 10.0 ** RNG.integers(-30, 30, 5000)).astype(np.float32)
    bits = RNG.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([SPECIAL, x, bits])


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-identical, except that NaNs need only both be NaN (payloads differ by library)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


def test_torch_written_bf16_f16_f32_read_exactly(tmp_path: Path) -> None:
    x = torch.from_numpy(_values())
    path = tmp_path / "t.safetensors"
    st_torch.save_file({"bf": x.to(torch.bfloat16).reshape(-1, 2), "h": x.half(), "f": x},
                       str(path))
    with open_safetensors(path) as f:
        assert f.info("bf") == ("BF16", (x.numel() // 2, 2), x.numel() * 2)
        want_bf = x.to(torch.bfloat16).float().reshape(-1, 2).numpy()
        np.testing.assert_array_equal(f.read("bf"), want_bf)  # NaN == NaN here
        assert f.read("bf").view(np.uint32).tolist() == want_bf.view(np.uint32).tolist()
        assert f.read("h").tobytes() == x.half().numpy().tobytes()
        assert f.read("f").tobytes() == x.numpy().tobytes()
        # Conversions on read round exactly as torch does (NaN payloads aside).
        _same_bits(f.read("f", "float16"), x.half().numpy())
        _same_bits(f.read("bf", np.float16), x.to(torch.bfloat16).half().reshape(-1, 2).numpy())
        _same_bits(f.read("h", "float32"), x.half().float().numpy())
        records = [(c.name, c.source, c.target, c.exact) for c in f.conversions]
    assert records == [("bf", "BF16", "float32", True), ("bf", "BF16", "float32", True),
                       ("f", "F32", "float16", False), ("bf", "BF16", "float16", False),
                       ("h", "F16", "float32", True)]


def test_narrowing_read_counts_overflow(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "w.safetensors",
                      {"w": np.array([1.0, 7e4, -1e5, np.inf], np.float32)})
    with open_safetensors(tmp_path / "w.safetensors") as f:
        assert f.read("w", "float16").tolist() == [1.0, np.inf, -np.inf, np.inf]
        (conv,) = f.conversions
    assert conv.overflow == 2 and "2 values overflowed to inf" in conv.describe()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # f16 refs
def test_bf16_writer_rounds_like_torch(tmp_path: Path) -> None:
    x = _values()
    nan = np.isnan(x)

    def torch_bits(a: np.ndarray) -> np.ndarray:
        return torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)

    # torch's own NaN bits differ between its scalar (0x7FC0) and vector (0xFFFF) paths;
    # ours are always 0x7FC0. Every other value must round to the same bits.
    bits = f32_to_bf16_bits(x)
    assert bits[~nan].tolist() == torch_bits(x)[~nan].tolist()
    assert set(bits[nan].tolist()) == {0x7FC0}
    write_safetensors(tmp_path / "b.safetensors", {"w": x, "h": x.astype(np.float16)},
                      dtype="bfloat16")
    got = st_torch.load_file(str(tmp_path / "b.safetensors"))
    assert got["w"].dtype == torch.bfloat16
    assert got["w"].view(torch.int16).numpy().view(np.uint16).tolist() == bits.tolist()
    h = x.astype(np.float16)
    h_bits = got["h"].view(torch.int16).numpy().view(np.uint16)
    assert h_bits[~np.isnan(h)].tolist() == torch_bits(h.astype(np.float32))[~np.isnan(h)].tolist()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # f16 refs
def test_writer_converts_to_float16_in_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sio, "CHUNK_ELEMENTS", 1000)  # several chunks per tensor
    x = _values()[:7 * 1400]
    write_safetensors(tmp_path / "h.safetensors", {"w": x.reshape(-1, 7)[:, 2:]},
                      dtype="float16")  # non-contiguous source
    got = st_torch.load_file(str(tmp_path / "h.safetensors"))["w"]
    assert got.numpy().tobytes() == x.reshape(-1, 7)[:, 2:].astype(np.float16).tobytes()
    with open_safetensors(tmp_path / "h.safetensors") as f:  # and a chunked converting read
        assert f.read("w", "float32").tobytes() == \
            x.reshape(-1, 7)[:, 2:].astype(np.float16).astype(np.float32).tobytes()


def test_writer_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="'i' of dtype int64"):
        write_safetensors(tmp_path / "x.safetensors", {"i": np.zeros(2, np.int64)})
    with pytest.raises(WeightsError, match="float64 tensor 'd' as bfloat16"):
        write_safetensors(tmp_path / "x.safetensors", {"d": np.zeros(2)}, dtype="bfloat16")
    with pytest.raises(WeightsError, match="appears twice"):
        write_safetensors(tmp_path / "x.safetensors", [("a", np.zeros(1, np.float32))] * 2)
    with pytest.raises(WeightsError, match="reserved"):
        write_safetensors(tmp_path / "x.safetensors", {"__metadata__": np.zeros(1)})
    with pytest.raises(WeightsError, match="strings to strings"):
        write_safetensors(tmp_path / "x.safetensors", {}, metadata={"a": 1})
    assert not (tmp_path / "x.safetensors").exists() and _tmp_files(tmp_path) == []


# ---------------------------------------------------------------- determinism and atomicity


def test_same_tensors_same_bytes(tmp_path: Path) -> None:
    arrays = _mixed()
    write_safetensors(tmp_path / "a.safetensors", arrays, metadata={"x": "1", "a": "2"})
    shuffled = dict(reversed(list(arrays.items())))
    write_safetensors(tmp_path / "b.safetensors", shuffled.items(),
                      metadata={"a": "2", "x": "1"})
    write_safetensors(tmp_path / "c.safetensors", {
        k: Lazy(v.shape, v.dtype, lambda v=v: v.copy()) for k, v in arrays.items()},
        metadata={"a": "2", "x": "1"})
    data = (tmp_path / "a.safetensors").read_bytes()
    assert data == (tmp_path / "b.safetensors").read_bytes()
    assert data == (tmp_path / "c.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0 and data[8:9] == b"{"


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"old": np.ones(4, np.float32)})
    before = path.read_bytes()
    produced = []

    def boom() -> np.ndarray:
        raise error

    def fine() -> np.ndarray:
        produced.append(1)
        return np.zeros((100, 100), np.float32)

    # "a" is written before "b" fails: the failure comes mid-file.
    tensors = {"a": Lazy((100, 100), np.float32, fine), "b": Lazy((3,), np.float32, boom)}
    with pytest.raises(type(error)):
        write_safetensors(path, tensors)
    assert produced == [1]
    assert path.read_bytes() == before
    assert _tmp_files(tmp_path) == []


def test_lying_producer_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    with pytest.raises(WeightsError, match=r"'a' was declared float32 \[2\] but its producer "
                                           r"gave float32 \[3\]"):
        write_safetensors(path, {"a": Lazy((2,), np.float32, lambda: np.zeros(3, np.float32))})
    assert not path.exists() and _tmp_files(tmp_path) == []


def test_writer_keeps_permissions_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"a": np.zeros(1, np.float32)})
    path.chmod(0o640)
    write_safetensors(path, {"a": np.ones(1, np.float32)})
    assert path.stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------- laziness


MB50 = 50 * 2**20 // 4  # float32 elements in 50 MB


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """Four 50 MB tensors, each made only when written (the writer streams them)."""
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    tensors = {f"t{i}": Lazy((MB50,), np.float32,
                             lambda i=i: np.full(MB50, float(i), np.float32))
               for i in range(4)}
    tracemalloc.start()
    write_safetensors(path, tensors)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.3 * 50 * 2**20  # about one tensor, not four
    return path


def test_reading_one_tensor_reads_only_its_bytes(big_file: Path, monkeypatch) -> None:
    read = []
    real = sio._read_into

    def counting(path, f, offset, dst):
        read.append((offset, memoryview(dst).nbytes))
        return real(path, f, offset, dst)

    monkeypatch.setattr(sio, "_read_into", counting)
    with open_safetensors(big_file) as f:
        header_bytes = sum(n for _, n in read)
        assert header_bytes < 1000  # opening reads the header only
        assert f.info("t2") == ("F32", (MB50,), 50 * 2**20)
        tracemalloc.start()
        got = f.read("t2")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert got[0] == 2.0 and got[-1] == 2.0
    assert sum(n for _, n in read) - header_bytes == 50 * 2**20
    assert peak < 1.05 * 50 * 2**20


def test_converting_read_needs_one_output_and_one_chunk(big_file: Path) -> None:
    with open_safetensors(big_file) as f:
        tracemalloc.start()
        got = f.read("t3", "float16")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert got.dtype == np.float16 and got[0] == 3.0
    assert peak < 25 * 2**20 + 3 * 4 * sio.CHUNK_ELEMENTS


def test_file_truncated_after_open(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"a": np.ones(1000, np.float32), "b": np.ones(10, np.float32)})
    with open_safetensors(path) as f:
        with open(path, "r+b") as g:
            g.truncate(path.stat().st_size - 3000)
        with pytest.raises(WeightsError, match=r"file ended at byte .* \(was it truncated\?\)"):
            f.read("a")


# ---------------------------------------------------------------- hostile files

T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
D8 = b"\0" * 8


@pytest.mark.parametrize("content,message", [
    (b"", "0 bytes, too short for the 8-byte header length"),
    (b"\x01\x00", "2 bytes, too short"),
    (struct.pack("<Q", 200_000_000) + b"{}", "header claims 200000000 bytes, over the"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", "over the 100000000-byte limit"),
    (struct.pack("<Q", 50) + b"{}", "truncated: the header claims 50 bytes but only 2"),
    (_raw(b'{"a\xff":1}'), "header is not UTF-8"),
    (_raw(b' {"a": 1}'), "does not begin with '{'"),
    (_raw(b'{"a": '), "header is not valid JSON"),
    (_raw(b'{"a": NaN}'), "header is not valid JSON"),
    (_raw(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "header is not valid JSON"),
    (_raw(b'{"x": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}'),
     "header is not valid JSON"),
    (_raw(b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
          b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', D8),
     "header names 'a' twice"),
    (_raw(b'{"a": {"dtype": "I8", "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', D8),
     "header names 'dtype' twice"),
    (_raw(b'[1, 2]'), "does not begin with '{'"),
    (_raw({"__metadata__": {"a": 1}}), "'__metadata__' must map strings to strings"),
    (_raw({"w": [1]}), "tensor 'w': the header entry is not an object"),
    (_raw({"w": {"shape": [2], "data_offsets": [0, 8]}}, D8), "tensor 'w': .* no 'dtype'"),
    (_raw({"w": {**T, "dtype": "F128"}}, D8), "tensor 'w': unknown dtype \"F128\""),
    (_raw({"w": {**T, "dtype": 5}}, D8), "tensor 'w': unknown dtype 5"),
    (_raw({"w": {**T, "shape": [2.0]}}, D8), "tensor 'w': the shape is not a list of integ"),
    (_raw({"w": {**T, "shape": [True, 2]}}, D8), "tensor 'w': the shape is not a list"),
    (_raw({"w": {**T, "shape": [-2, -1]}}, D8), r"tensor 'w': the shape \[-2, -1\] has a neg"),
    (_raw({"w": {**T, "data_offsets": [0]}}, D8), "tensor 'w': data_offsets must be two"),
    (_raw({"w": {**T, "data_offsets": [8, 0]}}, D8), r"tensor 'w': data_offsets \[8, 0\] are "
                                                    "not a byte range"),
    (_raw({"w": {**T, "data_offsets": [-8, 0]}}, D8), "are not a byte range"),
    (_raw({"w": {**T, "data_offsets": [0, 16]}}, D8), r"tensor 'w': data_offsets \[0, 16\] run "
                                                     r"past the end of the data \(8 bytes\)"),
    (_raw({"w": {**T, "shape": [3]}}, D8), r"tensor 'w': dtype F32 and shape \[3\] need 12 "
                                          r"bytes, but data_offsets \[0, 8\] hold 8 bytes"),
    (_raw({"w": {**T, "shape": [2**62] * 1000}}, D8), "need more than the file holds"),
    (_raw({"w": {**T, "shape": [2**62, 2**62, 0]}}, D8), "need 0 bytes"),
    (_raw({"a": T, "b": {**T, "data_offsets": [4, 12]}}, D8 + b"\0" * 4),
     r"tensor 'b' \(bytes 4..12\) overlaps tensor 'a'"),
    (_raw({"a": T, "b": {**T, "data_offsets": [0, 8]}}, D8), "tensor 'b' .* overlaps tensor 'a'"),
    (_raw({"a": T, "b": {**T, "data_offsets": [12, 20]}}, D8 * 2 + b"\0" * 4),
     r"data bytes 8..12 belong to no tensor \(a hole before tensor 'b'\)"),
    (_raw({"a": {**T, "data_offsets": [4, 12]}}, D8 + b"\0" * 4), "bytes 0..4 belong to no "),
    (_raw({"a": T}, D8 + b"xx"), "2 bytes after the last tensor belong to no tensor"),
    (_raw({"a": T}, b"\0" * 6), "run past the end of the data"),
    (_raw({"a": {**T, "dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, b"\0"),
     r"need 1.5 bytes"),
])
def test_hostile_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as info:
        open_safetensors(path)
    assert str(info.value).startswith(f"error: cannot read weights file '{path}': ")


def test_valid_edge_cases_open(tmp_path: Path) -> None:
    """Padding, any key order, empty tensors sharing an offset, scalars, null metadata."""
    header = {"__metadata__": None, "s": {"dtype": "F32", "shape": [], "data_offsets": [8, 12]},
              "e1": {"dtype": "F16", "shape": [0, 5], "data_offsets": [8, 8]},
              "a": T, "e0": {"dtype": "F64", "shape": [0], "data_offsets": [0, 0]}}
    text = json.dumps(header).encode() + b"     "
    data = np.array([1, 2, 3], "<f4").tobytes()
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_raw(text, data))
    with open_safetensors(path) as f:
        assert f.names() == ["a", "e0", "e1", "s"]
        assert f.read("a").tolist() == [1.0, 2.0] and f.read("s").tolist() == 3.0
        assert f.read("e1").shape == (0, 5) and f.metadata == {}
        with pytest.raises(WeightsError, match="no tensor 'zz'"):
            f.read("zz")


def test_a_folder_or_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="it is a directory"):
        open_safetensors(tmp_path)
    with pytest.raises(WeightsError, match="cannot read weights file .*No such file"):
        open_safetensors(tmp_path / "nope.safetensors")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    with pytest.raises(WeightsError, match="not a regular file"):
        open_safetensors(fifo)


def test_reads_from_threads(tmp_path: Path, monkeypatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(sio, "CHUNK_ELEMENTS", 64)  # many seeks per read
    arrays = {f"t{i}": RNG.standard_normal(20_000).astype(np.float32) for i in range(8)}
    write_safetensors(tmp_path / "w.safetensors", arrays, dtype="bfloat16")
    names = list(arrays) * 4
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: unlocked seeks would interleave
    try:
        with open_safetensors(tmp_path / "w.safetensors") as f, ThreadPoolExecutor(4) as pool:
            got = list(pool.map(f.read, names))
    finally:
        sys.setswitchinterval(interval)
    for name, a in zip(names, got, strict=True):
        want = torch.from_numpy(arrays[name]).to(torch.bfloat16).float().numpy()
        assert a.tobytes() == want.tobytes()


# ---------------------------------------------------------------- unsupported dtypes

INT_TYPES = {"I8": (torch.int8, 1), "U8": (torch.uint8, 1), "I16": (torch.int16, 2),
             "I32": (torch.int32, 4), "I64": (torch.int64, 8), "BOOL": (torch.bool, 1),
             "F8_E4M3": (torch.float8_e4m3fn, 1), "F8_E5M2": (torch.float8_e5m2, 1)}


@pytest.mark.parametrize("code", sorted(INT_TYPES))
def test_quantized_and_integer_tensors_are_refused(tmp_path: Path, code: str) -> None:
    dtype, size = INT_TYPES[code]
    path = tmp_path / "q.safetensors"
    st_torch.save_file({"q": torch.zeros(4, 2).to(dtype), "f": torch.ones(2)}, str(path))
    with open_safetensors(path) as f:
        assert f.info("q") == (code, (4, 2), 8 * size)  # the header is fine
        assert f.read("f").tolist() == [1.0, 1.0]
        with pytest.raises(WeightsError) as info:
            f.read("q")
    msg = str(info.value)
    assert f"tensor 'q' has dtype {code}, an unsupported quantized/integer weight dtype" in msg
    assert "dequantize" in msg


# ---------------------------------------------------------------- checkpoints


def _sharded(folder: Path, weight_map: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    arrays = {f"model.layers.{i}.w": RNG.standard_normal((4, 3)).astype(np.float32)
              for i in range(3)}
    write_safetensors(folder / "model-00001-of-00002.safetensors",
                      {k: arrays[k] for k in list(arrays)[:2]})
    write_safetensors(folder / "model-00002-of-00002.safetensors",
                      {k: arrays[k] for k in list(arrays)[2:]}, dtype="bfloat16")
    if weight_map is None:
        weight_map = {k: f"model-0000{1 if i < 2 else 2}-of-00002.safetensors"
                      for i, k in enumerate(arrays)}
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 72}, "weight_map": weight_map}))
    return arrays


def test_sharded_checkpoint(tmp_path: Path) -> None:
    arrays = _sharded(tmp_path)
    with open_checkpoint(tmp_path) as ck:
        assert ck.names() == sorted(arrays) and ck.metadata == {"total_size": 72}
        assert ck.info("model.layers.2.w") == ("BF16", (4, 3), 24)
        assert np.array_equal(ck.read("model.layers.0.w"), arrays["model.layers.0.w"])
        bf = torch.from_numpy(arrays["model.layers.2.w"]).to(torch.bfloat16).float().numpy()
        assert np.array_equal(ck.read("model.layers.2.w"), bf)
        assert [(c.name, c.source) for c in ck.conversions] == [("model.layers.2.w", "BF16")]
        with pytest.raises(WeightsError, match="no tensor 'nope' in the checkpoint"):
            ck.read("nope")


def test_single_file_checkpoint_is_preferred(tmp_path: Path) -> None:
    _sharded(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", {"only": np.zeros(1, np.float32)})
    with open_checkpoint(tmp_path) as ck:
        assert ck.names() == ["only"]


@pytest.mark.parametrize("shard,message", [
    ("../evil.safetensors", "not a plain relative name"),
    ("sub/../../evil.safetensors", "not a plain relative name"),
    ("/etc/passwd", "not a plain relative name"),
    ("C:/x.safetensors", "not a plain relative name"),
    ("a\\..\\b.safetensors", "not a plain relative name"),
    ("", "not a plain relative name"),
    ("missing.safetensors", "shard file 'missing.safetensors' does not exist"),
])
def test_shard_names_stay_inside_the_folder(tmp_path: Path, shard: str, message: str) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "evil.safetensors").write_bytes(_raw({}))
    arrays = _sharded(model)
    weight_map = {k: "model-00001-of-00002.safetensors" for k in list(arrays)[:2]}
    weight_map[list(arrays)[2]] = shard
    _sharded(model, weight_map)
    with pytest.raises(WeightsError, match=message):
        open_checkpoint(model)


def test_index_and_shards_must_agree(tmp_path: Path) -> None:
    arrays = _sharded(tmp_path)
    names = list(arrays)
    first, second = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    _sharded(tmp_path, {names[0]: first, names[1]: first, names[2]: first})
    with pytest.raises(WeightsError, match=f"tensor '{names[2]}' is not in its shard"):
        open_checkpoint(tmp_path)
    _sharded(tmp_path, {names[0]: first, names[2]: second})
    with pytest.raises(WeightsError, match=f"shard '{first}' holds tensor '{names[1]}', which "
                                           "the index does not list"):
        open_checkpoint(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"a": "x", "a": "y"}}')
    with pytest.raises(WeightsError, match="names 'a' twice"):
        open_checkpoint(tmp_path)
    index.write_bytes(b"\xff{}")
    with pytest.raises(WeightsError, match="not UTF-8 JSON"):
        open_checkpoint(tmp_path)
    index.write_text('{"weight_map": []}')
    with pytest.raises(WeightsError, match="no 'weight_map' object"):
        open_checkpoint(tmp_path)


def test_pickle_checkpoints_are_not_read(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    with pytest.raises(WeightsError) as info:
        open_checkpoint(tmp_path)
    msg = str(info.value)
    assert "it has pytorch_model.bin, a pickle file" in msg and "does not read" in msg
    assert "save_pretrained" in msg
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors or model.safetensors.index"):
        open_checkpoint(tmp_path)
    with pytest.raises(WeightsError, match="not a folder"):
        open_checkpoint(tmp_path / "nowhere")


# ---------------------------------------------------------------- weights.py on top

SPEC = """\
attndsl: 1
dims:
  batch: dynamic
  seq: dynamic
  d: 16
inputs:
  x: [batch, seq, d]
blocks:
  attn:
    query: x
    heads: 2
    mask: causal
outputs:
  y: attn
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_checkpoint_dtypes_load_as_float32(tmp_path: Path, dtype) -> None:
    model = parse_spec(SPEC, "spec.yaml")
    arrays = seeded_weights(model)
    path = tmp_path / "w.safetensors"
    st_torch.save_file({k: torch.from_numpy(v).to(dtype) for k, v in arrays.items()}, str(path))
    got, conversions = load_weights_with_conversions(model, path)
    assert list(got) == list(model.weight_shapes())
    for k, v in arrays.items():
        want = torch.from_numpy(v).to(dtype).float().numpy()
        assert got[k].dtype == np.float32 and got[k].tobytes() == want.tobytes()
    code = {torch.float32: None, torch.float16: "F16", torch.bfloat16: "BF16"}[dtype]
    if code is None:
        assert conversions == []
    else:
        assert {(c.source, c.target, c.exact) for c in conversions} == {(code, "float32", True)}
        assert sorted(c.name for c in conversions) == sorted(arrays)


def test_quantized_weights_are_refused_by_name(tmp_path: Path) -> None:
    model = parse_spec(SPEC, "spec.yaml")
    tensors = {k: torch.from_numpy(v) for k, v in seeded_weights(model).items()}
    tensors["attn.q_proj.weight"] = torch.zeros(16, 16, dtype=torch.int8)
    path = tmp_path / "w.safetensors"
    st_torch.save_file(tensors, str(path))
    with pytest.raises(WeightsError) as info:
        load_weights(model, path)
    msg = str(info.value)
    assert ("array 'attn.q_proj.weight' has dtype I8, an unsupported quantized/integer weight "
            "dtype") in msg
    assert "dequantize" in msg


def test_corrupt_weights_file_names_the_file(tmp_path: Path) -> None:
    model = parse_spec(SPEC, "spec.yaml")
    path = tmp_path / "w.safetensors"
    path.write_bytes(_raw({"attn.q_proj.weight": {**T, "shape": [3]}}, D8))
    with pytest.raises(WeightsError, match=f"cannot read weights file '{path}': tensor "
                                           "'attn.q_proj.weight': dtype F32"):
        load_weights(model, path)
