"""Safetensors files without torch or the ``safetensors`` package: a lazy reader that treats
every file as hostile, sharded checkpoints, and a streaming, deterministic, atomic writer.

The format: 8 bytes ``N`` (unsigned little-endian), ``N`` bytes of UTF-8 JSON that begins
with ``{`` and may be padded with spaces, then the data buffer. The JSON maps each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data
buffer) and may hold ``"__metadata__"``, a string-to-string map. Duplicate names are not
allowed, and the tensors must cover the data buffer exactly: no holes, no overlaps, nothing
after the last tensor.

Opening a file reads and checks only its header (bounded by ``MAX_HEADER_BYTES``); every
number in it is checked against the file before it is used. ``read`` then reads exactly one
tensor's bytes with positioned reads into a fresh array (no ``mmap``: a file truncated by
another process while mapped would crash the interpreter with SIGBUS instead of raising).
Conversions between float types run in chunks, so reading a tensor costs its output array
plus one chunk.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .errors import WeightsError
from .fileio import open_atomic

#: The largest header read, as in the reference implementation (real headers are a few MB).
MAX_HEADER_BYTES = 100_000_000
#: The largest ``model.safetensors.index.json`` read.
MAX_INDEX_BYTES = 100_000_000
#: Elements converted per step: bounds the scratch memory of a converting read or write.
CHUNK_ELEMENTS = 1 << 20
#: Bytes per ``read`` call (Linux returns at most about 2 GiB per call anyway).
_READ_BLOCK = 1 << 26

# Every dtype the format defines, with its size in bits (sub-byte types pack).
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
# The dtypes a float model can take its weights from, with their little-endian storage.
_READABLE = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
             "BF16": np.dtype("<u2")}
# Output dtypes ``read`` can produce, by every name a caller may use.
_TARGETS = {"float64": "float64", "f8": "float64", "F64": "float64",
            "float32": "float32", "f4": "float32", "F32": "float32",
            "float16": "float16", "f2": "float16", "F16": "float16"}
# What ``read`` returns without a dtype: the file's type, float32 for BF16 (numpy has none).
_NATIVE = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "float32"}
# Value-preserving conversions (every source value is exactly representable in the target).
_EXACT = {("F16", "float32"), ("F16", "float64"), ("BF16", "float32"), ("BF16", "float64"),
          ("F32", "float64")}
# Write dtypes, with their safetensors code and byte order; the order of codes in the
# reference's dtype enum decides the data layout (larger alignment first).
_WRITE_CODES = {"float64": "F64", "float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_LAYOUT_RANK = {"F64": 0, "F32": 1, "BF16": 2, "F16": 3}
SUPPORTED_DTYPES = ("F64", "F32", "F16", "BF16")


class TensorInfo(NamedTuple):
    """What the header says of one tensor: safetensors dtype code, shape, byte count."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Conversion:
    """One type conversion ``read`` performed, for the model's record. ``exact``: every value
    of ``source`` is representable in ``target`` (a widening); otherwise values were rounded
    to nearest even and ``overflow`` counts finite values that became infinite."""

    name: str
    source: str
    target: str
    exact: bool
    overflow: int = 0

    def describe(self) -> str:
        how = "exact" if self.exact else "rounded to nearest even"
        extra = f", {self.overflow} values overflowed to inf" if self.overflow else ""
        return f"{self.name}: {self.source} -> {self.target} ({how}{extra})"


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int


def _fail(path: str | os.PathLike, problem: str, hint: str | None = None) -> WeightsError:
    return WeightsError(f"cannot read weights file '{path}': {problem}", hint=hint)


def unsupported_dtype_problem(name: str, dtype: str, noun: str = "tensor") -> str:
    """The message for a tensor whose dtype no float model can take (shared with the
    weights checker so both say the same thing)."""
    return (f"{noun} '{name}' has dtype {dtype}, an unsupported quantized/integer weight "
            f"dtype (attndsl reads {', '.join(SUPPORTED_DTYPES)})")


UNSUPPORTED_HINT = "dequantize or convert the checkpoint to float32, float16 or bfloat16"


# --------------------------------------------------------------------------- the reader


class SafetensorsFile:
    """One open safetensors file whose header has been checked. Use as a context manager,
    or call ``close``. ``conversions`` records every type conversion ``read`` performed.
    Reads from several threads are safe (they take turns on the file handle)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.conversions: list[Conversion] = []
        try:
            self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open until close()
        except OSError as err:
            raise _fail(path, err.strerror or str(err)) from None
        self._lock = threading.Lock()  # reads seek the shared handle
        try:
            size = os.fstat(self._f.fileno()).st_size
            self._entries, self.metadata = _parse_header(self.path, self._f, size)
        except BaseException:
            self._f.close()
            raise

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def names(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def info(self, name: str) -> TensorInfo:
        """dtype code, shape and byte count of ``name``, from the header alone."""
        e = self._entry(name)
        return TensorInfo(e.dtype, e.shape, e.nbytes)

    def read(self, name: str, dtype: str | np.dtype | type | None = None) -> np.ndarray:
        """The tensor ``name`` as a new array, reading only its bytes. ``dtype`` (float64,
        float32 or float16) converts it; by default the file's type, float32 for BF16 (exact).
        Integer and quantized tensors are refused."""
        e = self._entry(name)
        target = _target_name(dtype, self.path) if dtype is not None else None
        with self._lock:
            out = _read_entry(self.path, self._f, name, e, target)
        if out.conversion is not None:
            self.conversions.append(out.conversion)
        return out.array

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise _fail(self.path, f"no tensor '{name}'") from None


def open_safetensors(path: str | os.PathLike) -> SafetensorsFile:
    """Open ``path`` and check its header (bounded size, UTF-8 JSON, every tensor's dtype,
    shape and offsets against the file); no tensor data is read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise _fail(path, err.strerror or str(err)) from None
    if stat.S_ISDIR(mode):
        raise _fail(path, "it is a directory", hint="use open_checkpoint for a model folder")
    if not stat.S_ISREG(mode):  # a FIFO would block the open, a device never ends
        raise _fail(path, "it is not a regular file")
    return SafetensorsFile(path)


def _parse_header(path: str, f: Any, size: int) -> tuple[dict[str, _Entry], dict[str, str]]:
    if size < 8:
        raise _fail(path, f"the file is {size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", _read_exact(path, f, 0, 8))
    if n > MAX_HEADER_BYTES:
        raise _fail(path, f"the header claims {n} bytes, over the {MAX_HEADER_BYTES}-byte "
                          "limit (this is not a safetensors file, or a damaged one)")
    if 8 + n > size:
        raise _fail(path, f"the file is truncated: the header claims {n} bytes but only "
                          f"{size - 8} follow the length")
    raw = _read_exact(path, f, 8, n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _fail(path, f"the header is not UTF-8 (byte {err.start})") from None
    if not text.startswith("{"):
        raise _fail(path, "the header does not begin with '{' (not a safetensors file?)")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constants)
    except _DuplicateKey as err:
        raise _fail(path, f"the header names '{err.args[0]}' twice") from None
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"the header is not valid JSON ({_short(err)})") from None
    if not isinstance(header, dict):
        raise _fail(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "'__metadata__' must map strings to strings")
    data_start = 8 + n
    data_size = size - data_start
    entries = {name: _check_entry(path, name, info, data_start, data_size)
               for name, info in header.items()}
    _check_coverage(path, entries, data_start, data_size)
    return entries, dict(metadata)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _no_constants(word: str) -> None:
    raise ValueError(f"{word} is not JSON")


def _short(err: Exception) -> str:
    msg = str(err) or type(err).__name__
    return msg if len(msg) <= 200 else msg[:200] + "..."


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(path: str, name: str, info: object, data_start: int,
                 data_size: int) -> _Entry:
    where = f"tensor '{name}'"
    if not isinstance(info, dict):
        raise _fail(path, f"{where}: the header entry is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise _fail(path, f"{where}: the header entry has no '{key}'")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPE_BITS:
        raise _fail(path, f"{where}: unknown dtype {json.dumps(dtype)[:60]}",
                    hint=f"safetensors dtypes are {', '.join(sorted(_DTYPE_BITS))}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise _fail(path, f"{where}: the shape is not a list of integers")
    if any(d < 0 for d in shape):
        raise _fail(path, f"{where}: the shape {_show_shape(shape)} has a negative dimension")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)):
        raise _fail(path, f"{where}: data_offsets must be two integers [begin, end]")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise _fail(path, f"{where}: data_offsets [{begin}, {end}] are not a byte range")
    if end > data_size:
        raise _fail(path, f"{where}: data_offsets [{begin}, {end}] run past the end of the "
                          f"data ({data_size} bytes): the file is truncated or damaged")
    # The element count, stopping early: a hostile shape of huge dimensions must not build
    # an enormous integer. Without a zero dimension the product only grows.
    count = 0 if 0 in shape else 1
    limit = (data_size * 8) // _DTYPE_BITS[dtype] + 1
    for d in shape:
        if count == 0 or count > limit:
            break
        count *= d
    bits = count * _DTYPE_BITS[dtype]
    if count > limit or bits != (end - begin) * 8:
        claimed = "more than the file holds" if count > limit else f"{bits / 8:g} bytes"
        raise _fail(path, f"{where}: dtype {dtype} and shape {_show_shape(shape)} need "
                          f"{claimed}, but data_offsets [{begin}, {end}] hold "
                          f"{end - begin} bytes")
    return _Entry(dtype, tuple(shape), data_start + begin, end - begin)


def _show_shape(shape: list[int]) -> str:
    text = json.dumps(shape)
    return text if len(text) <= 80 else text[:77] + "...]"


def _check_coverage(path: str, entries: dict[str, _Entry], data_start: int,
                    data_size: int) -> None:
    """The tensors tile the data buffer: sorted by offset, each begins where the previous
    one ended (empty tensors may share an offset) and the last ends at the end of file."""
    pos, prev = 0, None
    order = sorted(entries.items(), key=lambda kv: (kv[1].start, kv[1].nbytes, kv[0]))
    for name, e in order:
        begin = e.start - data_start
        if begin < pos:
            raise _fail(path, f"tensor '{name}' (bytes {begin}..{begin + e.nbytes}) overlaps "
                              f"tensor '{prev}' (which ends at byte {pos})")
        if begin > pos:
            raise _fail(path, f"data bytes {pos}..{begin} belong to no tensor (a hole before "
                              f"tensor '{name}')")
        pos, prev = begin + e.nbytes, name
    if pos != data_size:
        raise _fail(path, f"{data_size - pos} bytes after the last tensor belong to no tensor")


class _Read(NamedTuple):
    array: np.ndarray
    conversion: Conversion | None


def _target_name(dtype: str | np.dtype | type, path: str) -> str:
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if key not in _TARGETS:
        raise _fail(path, f"cannot convert weights to {key}",
                    hint="read as float64, float32 or float16")
    return _TARGETS[key]


def _read_entry(path: str, f: Any, name: str, e: _Entry, target: str | None) -> _Read:
    if e.dtype not in _READABLE:
        raise _fail(path, unsupported_dtype_problem(name, e.dtype), hint=UNSUPPORTED_HINT)
    target = target or _NATIVE[e.dtype]
    storage = _READABLE[e.dtype]
    count = e.nbytes // storage.itemsize
    out = np.empty(e.shape, dtype=target)
    flat = out.reshape(-1)
    if e.dtype != "BF16" and storage == np.dtype(target).newbyteorder("<"):
        _read_into(path, f, e.start, flat.view(np.uint8))  # no conversion: straight in
        if not np.little_endian:
            flat.byteswap(inplace=True)
        return _Read(out, None)
    exact = (e.dtype, target) in _EXACT
    overflow = 0
    n = min(count, CHUNK_ELEMENTS)
    buf = np.empty(n, dtype=storage)
    wide = np.empty(n, dtype=np.float32) if e.dtype == "BF16" and target != "float32" else None
    for i in range(0, count, CHUNK_ELEMENTS):
        chunk = buf[:min(CHUNK_ELEMENTS, count - i)]
        _read_into(path, f, e.start + i * storage.itemsize, chunk.view(np.uint8))
        dst = flat[i:i + len(chunk)]
        if e.dtype == "BF16" and target == "float32":
            # bfloat16 is the top half of a float32: widen the bits, shift them up (exact).
            bits = dst.view(np.uint32)
            bits[...] = chunk
            np.left_shift(bits, 16, out=bits)
            continue
        src = chunk
        if wide is not None:
            src = wide[:len(chunk)]
            bits = src.view(np.uint32)
            bits[...] = chunk
            np.left_shift(bits, 16, out=bits)
        with np.errstate(over="ignore"):  # counted below, reported in the record
            dst[...] = src
        if not exact:
            overflow += int(np.count_nonzero(np.isinf(dst)) - np.count_nonzero(np.isinf(src)))
    return _Read(out, Conversion(name, e.dtype, target, exact, overflow))


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shifting the bits back is exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _read_exact(path: str, f: Any, offset: int, n: int) -> bytes:
    buf = bytearray(n)
    _read_into(path, f, offset, memoryview(buf))
    return bytes(buf)


def _read_into(path: str, f: Any, offset: int, dst: Any) -> None:
    """Fill ``dst`` from ``offset``; a short read means the file shrank under us."""
    view = memoryview(dst).cast("B")
    done = 0
    f.seek(offset)
    while done < len(view):
        got = f.readinto(view[done:done + _READ_BLOCK])
        if not got:
            raise _fail(path, f"the file ended at byte {offset + done} while reading "
                              f"{len(view)} bytes from byte {offset} (was it truncated?)")
        done += got


# --------------------------------------------------------------------------- checkpoints


class Checkpoint:
    """The tensors of a model folder (one file or shards), with ``SafetensorsFile``'s
    ``names`` / ``info`` / ``read`` interface. ``conversions`` spans all shards."""

    def __init__(self, files: list[SafetensorsFile], owner: dict[str, SafetensorsFile],
                 metadata: dict[str, Any]):
        self.files = files
        self._owner = owner
        self.metadata = metadata

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self.files:
            f.close()

    @property
    def conversions(self) -> list[Conversion]:
        return [c for f in self.files for c in f.conversions]

    def names(self) -> list[str]:
        return sorted(self._owner)

    def __contains__(self, name: object) -> bool:
        return name in self._owner

    def info(self, name: str) -> TensorInfo:
        return self._file(name).info(name)

    def read(self, name: str, dtype: str | np.dtype | type | None = None) -> np.ndarray:
        return self._file(name).read(name, dtype)

    def _file(self, name: str) -> SafetensorsFile:
        try:
            return self._owner[name]
        except KeyError:
            where = self.files[0].path if len(self.files) == 1 else "the checkpoint"
            raise WeightsError(f"no tensor '{name}' in {where}") from None


SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_UNREAD = {"pytorch_model.bin": "a pickle file (loading it can run arbitrary code)",
           "pytorch_model.bin.index.json": "the index of pickle shards",
           "tf_model.h5": "a TensorFlow file", "flax_model.msgpack": "a Flax file"}
_CONVERT_HINT = ("convert it once where you trust it, e.g. in Python: "
                 "AutoModel.from_pretrained(DIR).save_pretrained(NEW_DIR) "
                 "(transformers writes safetensors by default)")


def open_checkpoint(model_dir: str | os.PathLike) -> Checkpoint:
    """The weights of a model folder as ``save_pretrained`` writes it: ``model.safetensors``,
    or ``model.safetensors.index.json`` and its shards. Every shard must be a plain relative
    name inside ``model_dir`` (symbolic links are followed: the Hugging Face cache links each
    file to a blob). Pickle (``pytorch_model.bin``) files are never read."""
    d = Path(model_dir)
    if not d.is_dir():
        raise WeightsError(f"cannot read checkpoint '{d}': not a folder")
    if (d / SINGLE_FILE).is_file():
        f = open_safetensors(d / SINGLE_FILE)
        return Checkpoint([f], {n: f for n in f.names()}, {})
    if (d / INDEX_FILE).is_file():
        return _open_sharded(d, d / INDEX_FILE)
    for fname, what in _UNREAD.items():
        if (d / fname).exists():
            raise WeightsError(f"cannot read checkpoint '{d}': it has {fname}, {what}, which "
                               f"attndsl does not read; it reads {SINGLE_FILE} or "
                               f"{INDEX_FILE} with its shards", hint=_CONVERT_HINT)
    raise WeightsError(f"cannot read checkpoint '{d}': no {SINGLE_FILE} or {INDEX_FILE}")


def _open_sharded(d: Path, index_path: Path) -> Checkpoint:
    def bad(problem: str) -> WeightsError:
        return WeightsError(f"cannot read checkpoint index '{index_path}': {problem}")

    if index_path.stat().st_size > MAX_INDEX_BYTES:
        raise bad(f"it is over the {MAX_INDEX_BYTES}-byte limit")
    try:
        index = json.loads(index_path.read_bytes().decode("utf-8"),
                           object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _DuplicateKey as err:
        raise bad(f"it names '{err.args[0]}' twice") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise bad(f"it is not UTF-8 JSON ({_short(err)})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise bad("it has no 'weight_map' object of tensor name -> shard file")
    shards: dict[str, SafetensorsFile] = {}
    try:
        for shard in sorted(set(weight_map.values())):
            shards[shard] = open_safetensors(_shard_path(d, shard, bad))
        owner: dict[str, SafetensorsFile] = {}
        for name, shard in weight_map.items():
            if name not in shards[shard]:
                raise bad(f"tensor '{name}' is not in its shard '{shard}'")
            owner[name] = shards[shard]
        for shard, f in shards.items():
            extra = [n for n in f.names() if weight_map.get(n) != shard]
            if extra:
                raise bad(f"shard '{shard}' holds tensor '{extra[0]}', which the index "
                          + ("does not list" if extra[0] not in weight_map
                             else f"places in '{weight_map[extra[0]]}'"))
    except BaseException:
        for f in shards.values():
            f.close()
        raise
    metadata = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
    return Checkpoint(list(shards.values()), owner, metadata)


def _shard_path(d: Path, shard: str, bad: Callable[[str], WeightsError]) -> Path:
    """A shard name is a relative path that stays in the folder: no absolute path, drive,
    backslash or '..' component (checked on the text, before touching the file system)."""
    parts = shard.split("/")
    if (not shard or "\\" in shard or "\0" in shard or posixpath.isabs(shard)
            or (len(shard) > 1 and shard[1] == ":") or ".." in parts or "" in parts):
        raise bad(f"shard file '{shard}' is not a plain relative name inside '{d}'")
    p = d.joinpath(*parts)
    if not p.is_file():
        raise bad(f"shard file '{shard}' does not exist in '{d}'")
    return p


# --------------------------------------------------------------------------- the writer


class Lazy(NamedTuple):
    """A tensor made only when it is written: its shape and numpy dtype up front (the
    header comes first), then ``produce()`` gives the array."""

    shape: tuple[int, ...]
    dtype: Any
    produce: Callable[[], np.ndarray]


TensorSource = np.ndarray | Lazy


class _Plan(NamedTuple):
    name: str
    source: TensorSource
    shape: tuple[int, ...]
    src_dtype: np.dtype
    code: str
    nbytes: int


def write_safetensors(path: str | os.PathLike,
                      tensors: Mapping[str, TensorSource] | Iterable[tuple[str, TensorSource]],
                      metadata: Mapping[str, str] | None = None,
                      dtype: str | None = None) -> None:
    """Write ``tensors`` (arrays, or ``Lazy`` producers) to ``path`` as safetensors.

    Deterministic: the same tensors and metadata give the same bytes (the reference
    library's layout: larger dtypes first, then names in order; compact JSON padded to 8
    bytes; metadata keys sorted). Streamed: one tensor is produced, converted and written at a
    time. Atomic: the data goes to a temporary file in the same folder, is synced, then
    replaces ``path``; on any error or interrupt the temporary file is removed and an
    existing ``path`` is untouched. ``dtype`` (float32, float16 or bfloat16) converts every
    tensor, rounding to nearest even (bfloat16 as torch rounds it); by default each keeps its
    float type."""
    items = list(tensors.items() if isinstance(tensors, Mapping) else tensors)
    plans: list[_Plan] = []
    seen: set[str] = set()
    for name, src in items:
        if not isinstance(name, str):
            raise WeightsError(f"tensor names must be strings, got {name!r}")
        if name in seen or name == "__metadata__":
            raise WeightsError(f"cannot write tensor '{name}': "
                               + ("the name is reserved" if name == "__metadata__"
                                  else "the name appears twice"))
        seen.add(name)
        plans.append(_plan(name, src, dtype))
    if metadata is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError("safetensors metadata must map strings to strings")
    plans.sort(key=lambda p: (_LAYOUT_RANK[p.code], p.name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    offset = 0
    for p in plans:
        header[p.name] = {"dtype": p.code, "shape": list(p.shape),
                          "data_offsets": [offset, offset + p.nbytes]}
        offset += p.nbytes
    try:
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise WeightsError(f"cannot write a name that is not valid Unicode ({err})") from None
    text += b" " * (-len(text) % 8)  # so 8-byte types start aligned
    with open_atomic(path) as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for p in plans:
            _write_tensor(f, p)


def _plan(name: str, src: TensorSource, dtype: str | None) -> _Plan:
    if isinstance(src, Lazy):
        shape, src_dtype = tuple(int(d) for d in src.shape), np.dtype(src.dtype)
    elif isinstance(src, np.ndarray):
        shape, src_dtype = src.shape, src.dtype
    else:
        raise WeightsError(f"cannot write tensor '{name}': expected a numpy array or Lazy, "
                           f"got {type(src).__name__}")
    if src_dtype.kind != "f" or src_dtype.name not in _WRITE_CODES:
        raise WeightsError(f"cannot write tensor '{name}' of dtype {src_dtype}: "
                           "safetensors writing supports float64, float32 and float16 arrays")
    out = dtype or src_dtype.name
    if out not in _WRITE_CODES:
        raise WeightsError(f"cannot write tensors as {out}",
                           hint="write float64, float32, float16 or bfloat16")
    if out == "bfloat16" and src_dtype.name == "float64":
        # float64 -> float32 -> bfloat16 would round twice.
        raise WeightsError(f"cannot write float64 tensor '{name}' as bfloat16",
                           hint="convert it to float32 first, as torch would")
    code = _WRITE_CODES[out]
    count = int(np.prod(shape, dtype=object)) if shape else 1
    return _Plan(name, src, shape, src_dtype, code, count * _DTYPE_BITS[code] // 8)


def _write_tensor(f: Any, p: _Plan) -> None:
    arr = p.source.produce() if isinstance(p.source, Lazy) else p.source
    if not isinstance(arr, np.ndarray) or arr.shape != p.shape or arr.dtype != p.src_dtype:
        got = (f"{arr.dtype} {list(arr.shape)}" if isinstance(arr, np.ndarray)
               else type(arr).__name__)
        raise WeightsError(f"tensor '{p.name}' was declared {p.src_dtype} {list(p.shape)} "
                           f"but its producer gave {got}")
    flat = arr.reshape(-1)  # a view when contiguous
    want = p.code
    native = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}.get(want)
    if native is not None and flat.dtype == np.dtype(native) and flat.flags.c_contiguous:
        f.write(memoryview(flat).cast("B"))
        return
    for i in range(0, flat.size, CHUNK_ELEMENTS):
        chunk = flat[i:i + CHUNK_ELEMENTS]
        if want == "BF16":
            data = f32_to_bf16_bits(chunk.astype(np.float32, copy=False))
        else:
            with np.errstate(over="ignore"):  # as torch: too large for float16 -> inf
                data = chunk.astype(native)
        f.write(memoryview(np.ascontiguousarray(data)).cast("B"))


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (little-endian uint16), rounded to nearest even as torch
    does; NaN becomes the quiet NaN 0x7FC0 (torch's choice), infinities stay infinite."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))))
    out = (rounded >> np.uint32(16)).astype("<u2")
    out[np.isnan(x)] = 0x7FC0
    return out


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32, exact."""
    return _bf16_to_f32(np.asarray(bits, dtype=np.uint16))


def iter_tensors(source: SafetensorsFile | Checkpoint,
                 dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` in name order, one tensor read at a time."""
    for name in source.names():
        yield name, source.read(name, dtype)
