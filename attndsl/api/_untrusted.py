"""Reading an ``.onnx`` file that may come from anyone (``attndsl run MODEL.onnx``).

Nothing is read outside the model's folder and nothing runs before the file is checked:

1. the file is a regular file no bigger than the limit (the weights limit of
   attndsl/limits.py plus ``GRAPH_ALLOWANCE`` for the graph itself);
2. it is parsed without its external data (``onnx.load(..., load_external_data=False)``): a
   truncated or corrupted file is refused here;
3. every tensor stored as external data names a relative path inside the model's folder (no
   absolute path, no ``..``, no symbolic link out of the folder), an existing regular file,
   and an offset and length within it; only then is the data read;
4. every node (subgraphs and functions included) is in a domain attndsl emits: the standard
   ONNX domain and ``com.microsoft`` (the ``ort`` target's fused kernels), no custom ops;
5. it carries an ``attndsl.spec`` that parses and checks, and its graph matches that spec
   (``check_matches_spec``).
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, LimitError
from ..ir import Model

if TYPE_CHECKING:
    import onnx

ALLOWED_DOMAINS = ("", "ai.onnx", "com.microsoft")
"""Operator domains of the models attndsl writes (``com.microsoft``: the ``ort`` target)."""
GRAPH_ALLOWANCE = 256 << 20
"""Bytes a model file may hold beyond its weights (nodes, constants, the spec metadata)."""


def _tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("g"):
            yield from _tensors(attr.g)
        for g in attr.graphs:
            yield from _tensors(g)


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for g in attr.graphs:
                yield from _nodes(g)


def _external_file(where: str, folder: Path, tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    """The checked (file, offset, length) of a tensor stored as external data."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    bad = f"'{where}': the external data of tensor '{tensor.name}'"
    rel = Path(location)
    if not location or "\x00" in location:
        raise InputError(f"{bad} has no valid location")
    if rel.is_absolute() or location.startswith(("/", "\\")) or ":" in rel.parts[0]:
        raise InputError(f"{bad} is at the absolute path '{location}'",
                         hint="external data must lie in the model's folder")
    if ".." in rel.parts or ".." in Path(location.replace("\\", "/")).parts:
        raise InputError(f"{bad} leaves the model's folder ('{location}')",
                         hint="external data must lie in the model's folder")
    path = folder / rel
    real = Path(os.path.realpath(path))
    if real != Path(os.path.realpath(folder)) / rel and not real.is_relative_to(
            os.path.realpath(folder)):
        raise InputError(f"{bad} ('{location}') is a link out of the model's folder",
                         hint="external data must lie in the model's folder")
    try:
        st = os.stat(real)
    except OSError:
        raise InputError(f"{bad} is missing: no file '{location}' next to the model") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{bad} ('{location}') is not a regular file")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else st.st_size - offset
    except ValueError:
        raise InputError(f"{bad} has a bad offset or length") from None
    if offset < 0 or length < 0 or offset + length > st.st_size:
        raise InputError(f"{bad} claims bytes {offset}..{offset + length} of '{location}', "
                         f"which has {st.st_size}")
    return real, offset, length


def load_untrusted(path: str | os.PathLike[str], max_bytes: int,
                   read_external: bool = True) -> onnx.ModelProto:
    """Read and check an ONNX file as described in the module docstring (steps 1-4);
    InputError for anything wrong. External data is read into the returned proto, or with
    ``read_external=False`` only checked: the tensors keep their references, which
    ``read_external_tensor`` reads one at a time (a model run from its file, whose weights
    ONNX Runtime loads itself, is then not held twice)."""
    import onnx
    from google.protobuf.message import DecodeError

    where = str(path)
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"cannot read '{where}': no such file") from None
    except OSError as err:
        raise InputError(f"cannot read '{where}': {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot read '{where}': not a regular file")
    if st.st_size > max_bytes:
        raise LimitError(f"'{where}' is {st.st_size:,} bytes, over the limit of {max_bytes:,} "
                         "for a model file", hint="raise it with --max-weights-gib or "
                         "ATTNDSL_MAX_WEIGHTS_GIB (see docs/limits.md)")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise InputError(f"cannot read '{where}' as an ONNX model (truncated or corrupted?): "
                         f"{err or type(err).__name__}") from None
    except OSError as err:
        raise InputError(f"cannot read '{where}': {err.strerror or err}") from None
    if not proto.HasField("graph"):
        raise InputError(f"'{where}' is not an ONNX model (no graph)")
    _check_domains(where, proto)
    folder = p.parent
    external = [t for t in _tensors(proto.graph)
                if t.data_location == onnx.TensorProto.EXTERNAL]
    for f in proto.functions:
        for node in f.node:
            external += [t for t in _node_tensors(node)
                         if t.data_location == onnx.TensorProto.EXTERNAL]
    total = st.st_size
    for t in external:
        file, offset, length = _external_file(where, folder, t)
        total += length
        if total > max_bytes:
            raise LimitError(f"'{where}' with its external data is over the limit of "
                             f"{max_bytes:,} bytes", hint="raise it with --max-weights-gib "
                             "or ATTNDSL_MAX_WEIGHTS_GIB (see docs/limits.md)")
        if read_external:
            _read_into_tensor(t, file, offset, length)
    return proto


def _read_into_tensor(t: onnx.TensorProto, file: Path, offset: int, length: int) -> None:
    import onnx

    with open(file, "rb") as f:  # read here: onnx's loader would follow the path itself
        f.seek(offset)
        t.raw_data = f.read(length)
    del t.external_data[:]
    t.data_location = onnx.TensorProto.DEFAULT


def read_external_tensor(where: str, folder: Path, tensor: onnx.TensorProto
                         ) -> onnx.TensorProto:
    """A copy of ``tensor`` with its external data (checked again: inside ``folder``, a
    regular file, within its bounds) read in; an inline tensor as it is."""
    import onnx

    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return tensor
    file, offset, length = _external_file(where, folder, tensor)
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    _read_into_tensor(out, file, offset, length)
    return out


def _check_domains(where: str, proto: onnx.ModelProto) -> None:
    nodes = list(_nodes(proto.graph))
    for f in proto.functions:
        nodes += list(f.node)
    if proto.functions:
        raise InputError(f"'{where}' defines functions ({proto.functions[0].name}); attndsl "
                         "models have none")
    for node in nodes:
        if node.domain not in ALLOWED_DOMAINS:
            raise InputError(f"'{where}' has a node of the custom domain '{node.domain}' "
                             f"({node.op_type}); attndsl runs only models with standard ONNX "
                             "and com.microsoft operators")
    for imp in proto.opset_import:
        if imp.domain not in ALLOWED_DOMAINS:
            raise InputError(f"'{where}' imports the custom operator domain '{imp.domain}'")


# ---------------------------------------------------------------- the spec and the graph


def _signature(values) -> list[tuple[str, int, tuple[object, ...]]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in t.shape.dim)
        out.append((v.name, t.elem_type, dims))
    return out


def check_matches_spec(where: str, proto: onnx.ModelProto, model: Model) -> None:
    """The graph must be what the spec in its metadata compiles to, at its interface: the
    same inputs and outputs (names, element types, shapes) and the same weight initializers
    (names, shapes, element types) as a compile of that spec with the opset, target and
    passes the metadata records. Internal nodes and weight values are not compared: they
    depend on the sparse options and on the weights given."""
    import numpy as np

    from ..lower.compile import CompileOptions, compile_with_explanations
    from ..lower.pipeline import model_after, parse_pass_list
    from ..lower.targets import TARGETS

    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        opset = int(meta.get("attndsl.opset", "18"))
    except ValueError:
        raise InputError(f"'{where}': bad attndsl.opset metadata "
                         f"{meta['attndsl.opset']!r}") from None
    target = meta.get("attndsl.target", "portable")
    if target not in TARGETS:
        raise InputError(f"'{where}': unknown attndsl.target metadata {target!r}")
    passes = tuple(parse_pass_list(meta.get("attndsl.passes", "")))
    zeros = {n: np.zeros(s, np.float32 if model.dtype == "float32" else np.float16)
             for n, s in model.weight_shapes().items()}
    fresh, _ = compile_with_explanations(
        model, zeros, CompileOptions(opset=opset, target=target, sparse="dense", passes=passes))
    mismatch = []
    for what, got, want in (("inputs", _signature(proto.graph.input),
                             _signature(fresh.graph.input)),
                            ("outputs", _signature(proto.graph.output),
                             _signature(fresh.graph.output))):
        if got != want:
            mismatch.append(f"its graph {what} {_names(got)} are not the spec's {_names(want)}"
                            if [g[0] for g in got] != [w[0] for w in want] else
                            f"its graph {what} differ from the spec's in type or shape")
    weights = model_after(model, parse_pass_list(meta.get("attndsl.passes", ""))
                          ).weight_shapes()  # named as after the recorded passes

    def inits(p: onnx.ModelProto) -> dict[str, tuple[int, tuple[int, ...]]]:
        return {t.name: (t.data_type, tuple(t.dims)) for t in p.graph.initializer
                if t.name in weights}

    got_w, want_w = inits(proto), inits(fresh)
    bad = sorted(n for n in want_w if got_w.get(n) != want_w[n])
    if bad:
        mismatch.append(f"its weights {', '.join(bad[:4])} are missing or of another shape")
    if mismatch:
        raise InputError(f"'{where}' does not match the spec in its metadata: "
                         f"{'; '.join(mismatch)}",
                         hint="the attndsl.spec metadata or the graph was edited; recompile "
                         "the spec with 'attndsl compile'")


def _names(sig) -> str:
    return "(" + ", ".join(s[0] for s in sig) + ")" if sig else "()"


def max_model_bytes(weights_limit: int) -> int:
    """The size limit of a model file with its external data."""
    return weights_limit + GRAPH_ALLOWANCE if math.isfinite(weights_limit) else weights_limit
