"""Weights held aside: the graph passes and the checker work on a weight-free view of the model.

While the lowering runs inside ``holding_weights()``, the builder keeps each parameter's
array (by reference, never copied) in a dict and puts a *stub* into the graph: a
``TensorProto`` with the parameter's name, data type and dims whose data is an external-data
reference to ``HELD_LOCATION``, a name no file has. Everything that only needs the graph's
structure (graph passes, shape inference, the checker) runs on this view, whose size does not
grow with the weights; reading a stub's data (``numpy_helper.to_array``) fails, so a pass
that tried to would not go unnoticed. ``DetachedModel.attach`` converts each array to its
``TensorProto`` once, in place of its stub, for the in-memory model; ``lower.external_data``
streams the arrays to a file instead.

Compiler constants (names starting with ``/``) stay ordinary initializers: the passes read
and fold them, and they are small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper, numpy_helper

from ..arrays import realize

HELD_LOCATION = "<attndsl: weight held in memory, not in a file>"

_HELD: ContextVar[dict[str, np.ndarray] | None] = ContextVar("attndsl_held_weights",
                                                             default=None)


@contextmanager
def holding_weights() -> Iterator[dict[str, np.ndarray]]:
    """Within this context ``GraphBuilder.add_initializer`` keeps parameters aside: the dict
    it yields fills with name -> array while the graph gets stubs."""
    held: dict[str, np.ndarray] = {}
    token = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(token)


def held_weights() -> dict[str, np.ndarray] | None:
    """The dict parameters go to in the current ``holding_weights()`` context (else None)."""
    return _HELD.get()


def is_parameter(name: str) -> bool:
    """The lowering names every value and constant it makes with a leading ``/``; other
    initializers are the model's parameters (named as the weights, a contract)."""
    return not name.startswith("/")


def weight_stub(name: str, array: np.ndarray) -> onnx.TensorProto:
    """The weight-free stand-in for ``array``: name, data type, dims, no data."""
    stub = onnx.TensorProto()
    stub.dims.extend(array.shape)
    stub.name = name
    stub.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    stub.data_location = onnx.TensorProto.EXTERNAL
    entry = stub.external_data.add()
    entry.key, entry.value = "location", HELD_LOCATION
    return stub


def is_stub(tensor: onnx.TensorProto) -> bool:
    return (tensor.data_location == onnx.TensorProto.EXTERNAL
            and any(e.key == "location" and e.value == HELD_LOCATION
                    for e in tensor.external_data))


@dataclass
class DetachedModel:
    """A compiled model whose parameters are stubs in ``proto`` and arrays in ``weights``
    (C-contiguous, the model's dtype, in the order of the graph's initializers)."""

    proto: onnx.ModelProto
    weights: dict[str, np.ndarray] = field(repr=False)

    def stubs(self) -> list[onnx.TensorProto]:
        """The stub initializers, in graph order."""
        return [t for t in self.proto.graph.initializer if is_stub(t)]

    def weight_bytes(self) -> int:
        return sum(a.nbytes for a in self.weights.values())

    def attach(self, on_bytes: Callable[[int], None] | None = None) -> onnx.ModelProto:
        """``proto`` with every stub replaced by its tensor, in place (the arrays leave
        ``weights`` as they go in, so memory holds each weight about once). Each tensor is
        the ``numpy_helper.from_array`` of its array: the same bytes as a model built with
        the weights inline. ``on_bytes`` is told each tensor's size."""
        for tensor in self.proto.graph.initializer:
            if not is_stub(tensor):
                continue
            array = realize(self.weights.pop(tensor.name))  # made now if deferred
            check_stub(tensor, array)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
            if on_bytes is not None:
                on_bytes(array.nbytes)
        return self.proto


def check_stub(stub: onnx.TensorProto, array: np.ndarray) -> None:
    """The array fits its stub (what the checker would check of the tensor's data, which
    it never sees: see ``checker_view``)."""
    want = helper.tensor_dtype_to_np_dtype(stub.data_type)
    if array.dtype != want or tuple(array.shape) != tuple(stub.dims):
        raise AssertionError(f"weight {stub.name!r}: array {array.dtype}{list(array.shape)} "
                             f"does not match its stub {want}{list(stub.dims)}")
    if array.nbytes != math.prod(stub.dims) * want.itemsize:  # pragma: no cover - numpy
        raise AssertionError(f"weight {stub.name!r}: wrong byte count")


def checker_view(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the weight-free ``proto`` the ONNX checker can take: each stub becomes a
    graph input of the stub's type and shape (the checker would otherwise look for the
    stub's data file). ``check_model(full_check=True)`` on it checks every node against its
    schema, the graph's topology and names, the opset imports, the compiler constants and
    strict shape inference with the parameters' exact shapes; it does not see the
    parameters' bytes, whose dtype and size ``check_stub`` checks when they are attached or
    written."""
    view = onnx.ModelProto()
    view.CopyFrom(proto)  # weight-free: a few KB per node, no weight bytes
    graph = view.graph
    stubs = [t for t in graph.initializer if is_stub(t)]
    kept = [t for t in graph.initializer if not is_stub(t)]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in stubs)
    return view


def detach_proto(proto: onnx.ModelProto, min_bytes: int = 1024) -> DetachedModel:
    """A ``DetachedModel`` of an in-memory model whose tensors are inline (e.g. one too big
    to serialize): a weight-free copy in which every initializer of at least ``min_bytes``
    raw bytes is a stub, and those arrays (``proto`` is not changed). Each array is a copy
    of its tensor's bytes (protobuf hands them out as ``bytes``)."""
    out = onnx.ModelProto()
    graph = proto.graph
    copy_fields(proto, out, skip="graph")
    copy_fields(graph, out.graph, skip="initializer")
    weights: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        if tensor.HasField("raw_data") and len(tensor.raw_data) >= min_bytes:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            array = np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<"))
            array = array.astype(dtype, copy=False).reshape(tuple(tensor.dims))
            weights[tensor.name] = array
            out.graph.initializer.append(weight_stub(tensor.name, array))
        else:
            out.graph.initializer.append(tensor)
    return DetachedModel(out, weights)


def copy_fields(src: Message, dst: Message, skip: str = "",
                keep: Callable[[int], bool] | None = None) -> None:
    """Copy every set field of ``src`` but ``skip`` (and, with ``keep``, only those whose
    field number it accepts) into ``dst``."""
    for desc, value in src.ListFields():
        if desc.name == skip or (keep is not None and not keep(desc.number)):
            continue
        if desc.is_repeated:
            getattr(dst, desc.name).extend(value)
        elif desc.message_type is not None:
            getattr(dst, desc.name).CopyFrom(value)
        else:
            setattr(dst, desc.name, value)
