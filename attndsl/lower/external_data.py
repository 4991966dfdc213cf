"""Saving a compiled model: inline (one ``.onnx`` file) or with its weights as ONNX external
data in one file next to it (``MODEL.onnx.data``), both written atomically.

Protobuf cannot serialize a message over 2 GiB, so a model whose weights pass that must keep
them outside the ``.onnx`` file. ``external`` picks: ``auto`` (the default) writes external
data when the inline model would exceed ``threshold`` bytes (default ``AUTO_THRESHOLD``,
below the 2 GiB limit with room to spare), ``always`` whenever the model has weights,
``never`` keeps them inline (and refuses a model over the limit).

External data: each parameter's bytes are written tensor by tensor straight from its array
(no copy of the weights is made), in graph order, at offsets aligned like ``onnx``'s own
writer (64 KiB for tensors of 1 MiB or more, so ONNX Runtime can map them; 64 bytes
otherwise), and its ``TensorProto`` in the model points there (``location`` is the data
file's name, relative to the model's folder; ``offset``; ``length``). Compiler constants stay
inline. Same spec, same options: the same bytes in both files.

Atomicity: both files are first written to temporary files in the destination folder and
synced, then moved into place with ``os.replace``, the data file first; on any error
(KeyboardInterrupt included) the temporary files are removed and nothing partial is left.
A reader that opens the old model in the instant between the two moves may see the new data
file; an inline save leaves an existing ``MODEL.onnx.data`` of an earlier save alone.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from google.protobuf.message import Message

from ..arrays import realize
from ..errors import AttnDSLError, LoweringError
from .progress import Progress
from .weight_store import DetachedModel, check_stub, copy_fields, is_stub

PROTOBUF_LIMIT = (1 << 31) - 1  # the largest message protobuf serializes
AUTO_THRESHOLD = 2_000_000_000  # auto: external data above this many bytes
EXTERNAL_MODES = ("auto", "always", "never")
LARGE_TENSOR = 1 << 20  # tensors of at least this size start on a ...
LARGE_ALIGN = 1 << 16  # ... 64 KiB boundary (onnx's allocation granularity)
SMALL_ALIGN = 64
_CHUNK = 64 << 20  # bytes per write call


@dataclass(frozen=True)
class SavedModel:
    """What ``save_detached`` wrote: the model (with its weights when they are inline, else
    with the external-data references, which resolve next to ``path``: run it by path), its
    file and size, and the external data file and its size (None and 0 when inline)."""

    proto: onnx.ModelProto = field(repr=False)
    path: Path
    model_bytes: int
    data_path: Path | None = None
    data_bytes: int = 0


def data_path_for(path: str | Path) -> Path:
    """The external data file of the model at ``path``: ``MODEL.onnx.data``."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def check_external_options(external: str, threshold: int | None) -> None:
    """``external`` is a known mode and ``threshold`` a positive byte count (or None)."""
    if external not in EXTERNAL_MODES:
        from ..errors import did_you_mean

        raise AttnDSLError(f"unknown external data mode {external!r}",
                           hint=did_you_mean(external, EXTERNAL_MODES)
                           or f"choose one of {', '.join(EXTERNAL_MODES)}")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int)
                                  or threshold < 1):
        raise AttnDSLError(f"external-data-threshold must be a positive number of bytes, "
                           f"got {threshold!r}")


def inline_size(detached: DetachedModel) -> int:
    """An upper bound of the model's size with its weights inline: the weight-free model
    plus, per weight, its bytes and 16 bytes of field headers (more than a tag and two
    length prefixes take)."""
    return (detached.proto.ByteSize()
            + sum(a.nbytes + 16 for a in detached.weights.values()))


def wants_external(detached: DetachedModel, external: str = "auto",
                   threshold: int | None = None) -> bool:
    """Whether ``save_detached`` writes external data for these options."""
    check_external_options(external, threshold)
    if not detached.weights or external == "never":
        return False
    if external == "always":
        return True
    return inline_size(detached) > (AUTO_THRESHOLD if threshold is None else threshold)


def save_detached(detached: DetachedModel, path: str | Path, external: str = "auto",
                  threshold: int | None = None, progress: Progress | None = None) -> SavedModel:
    """Write the model to ``path`` (and its weights to ``MODEL.onnx.data`` when external
    data is chosen, see the module doc). Inline, the file is streamed from the weight-free
    model and the arrays (``_inline_pieces``; no serialized copy of the model is made), then
    the weights are attached to the in-memory model. Either way ``detached`` is consumed
    (its stubs become the weights or references into the data file)."""
    path = Path(path)
    progress = progress or Progress.silent()
    if not wants_external(detached, external, threshold):
        pieces, size = _inline_pieces(detached)
        if size > PROTOBUF_LIMIT:
            raise LoweringError(
                f"the model is {size:,} bytes with its weights inline, over protobuf's "
                f"2 GiB limit", hint="save the weights as external data "
                "(--external-data auto or always)")
        progress.phase("writing model", size, "bytes")
        with _atomic_files(path) as (out,):
            _write_pieces(out, pieces, progress)
        del pieces  # it holds the arrays: they must go as they move into the model
        # the in-memory model too (the arrays move into it one by one: about one copy)
        return SavedModel(detached.attach(), path, size)
    data_path = data_path_for(path)
    progress.phase("writing weights", detached.weight_bytes(), "bytes")
    with _atomic_files(data_path, path) as (data_file, model_file):
        offset = 0
        for tensor in detached.proto.graph.initializer:
            if not is_stub(tensor):
                continue
            array = realize(detached.weights[tensor.name])  # one made weight at a time
            check_stub(tensor, array)
            align = LARGE_ALIGN if array.nbytes >= LARGE_TENSOR else SMALL_ALIGN
            pad = -offset % align
            data_file.write(b"\0" * pad)
            offset += pad
            _write_chunks(data_file, _little_endian_bytes(array), progress)
            _point_to(tensor, data_path.name, offset, array.nbytes)
            offset += array.nbytes
        model = detached.proto.SerializeToString(deterministic=True)
        model_file.write(model)
    detached.weights.clear()  # they are in the file now; the stubs point there
    return SavedModel(detached.proto, path, len(model), data_path, offset)


def _inline_pieces(detached: DetachedModel) -> tuple[list[memoryview | np.ndarray], int]:
    """The bytes of the model with its weights inline, as pieces to write in order (the
    weights as their arrays, the rest as bytes), and their total size: exactly
    ``detached.attach().SerializeToString(deterministic=True)``, without building it.

    Protobuf writes a message's fields in field-number order, each length-delimited field
    as its tag, its length (a varint) and its bytes; so the model is its fields before
    ``graph`` (7), the graph's header and bytes, and its fields after; the graph is its
    fields before ``initializer`` (5), one field per initializer, and its fields after; and
    an inline weight is ``numpy_helper.from_array``'s tensor: dims, data_type and name, then
    ``raw_data`` (9), its last field."""
    proto, graph = detached.proto, detached.proto.graph
    graph_pieces: list[memoryview | np.ndarray] = [_fields(graph, below=5)]
    for tensor in graph.initializer:
        if not is_stub(tensor):
            body = tensor.SerializeToString(deterministic=True)
            graph_pieces += [memoryview(_header(5, len(body))), memoryview(body)]
            continue
        array = realize(detached.weights[tensor.name])
        check_stub(tensor, array)
        head = onnx.TensorProto()
        head.dims.extend(tensor.dims)
        head.name = tensor.name
        head.data_type = tensor.data_type
        prefix = head.SerializeToString(deterministic=True) + _header(9, array.nbytes)
        graph_pieces += [memoryview(_header(5, len(prefix) + array.nbytes) + prefix), array]
    graph_pieces.append(_fields(graph, above=5))
    graph_size = sum(_size_of(p) for p in graph_pieces)
    pieces = [_fields(proto, below=7), memoryview(_header(7, graph_size)), *graph_pieces,
              _fields(proto, above=7)]
    return pieces, sum(_size_of(p) for p in pieces)


def _size_of(piece: memoryview | np.ndarray) -> int:
    return piece.nbytes


def _header(number: int, length: int) -> bytes:
    """The tag of length-delimited field ``number`` (< 16: one byte) and the length."""
    out = bytearray([number << 3 | 2])
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _fields(message: Message, below: int = 0, above: int = 1 << 29) -> memoryview:
    """The serialized fields of ``message`` numbered below ``below`` or above ``above``."""
    part = type(message)()
    copy_fields(message, part, keep=lambda n: n < below or n > above)
    return memoryview(part.SerializeToString(deterministic=True))


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes, little-endian, C order, without a copy where they already are."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and
                                        np.little_endian is False):
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _write_pieces(out: BinaryIO, pieces: list[memoryview | np.ndarray],
                  progress: Progress) -> None:
    for piece in pieces:
        _write_chunks(out, piece if isinstance(piece, memoryview)
                      else _little_endian_bytes(piece), progress)


def _write_chunks(out: BinaryIO, data: memoryview, progress: Progress) -> None:
    for start in range(0, len(data), _CHUNK):
        chunk = data[start:start + _CHUNK]
        out.write(chunk)
        progress.advance(len(chunk))


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make the stub ``tensor`` an external-data reference (keys in onnx's order)."""
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = onnx.TensorProto.EXTERNAL


@contextmanager
def _atomic_files(*paths: Path) -> Iterator[tuple[BinaryIO, ...]]:
    """Open a temporary file next to each of ``paths``; when the block ends without error,
    sync them all and move them into place in the order given, else remove them. An
    existing file keeps its permissions; a new one gets ``0666 & ~umask``."""
    temps: list[tuple[Path, Path]] = []
    try:
        with ExitStack() as stack:
            files = []
            for path in paths:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                           dir=path.parent)
                temps.append((Path(tmp), path))
                files.append(stack.enter_context(os.fdopen(fd, "wb")))
            yield tuple(files)
            for f in files:
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists()
                     else 0o666 & ~_umask())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
