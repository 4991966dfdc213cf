"""A small deterministic graph builder over ``onnx.helper``.

Every value name comes from one counter and the current scope (``/<scope>/<Op>_<n>``), so the
same calls give the same graph, byte for byte. Generated names start with ``/``, which no spec
name does, so they never collide with graph inputs, outputs or weights. Constants become
initializers, shared between identical values. Helpers that changed signature between opsets
(the Reduce* family) take the opset into account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..arrays import Deferred, realize
from . import progress
from .weight_store import held_weights, is_parameter, weight_stub

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
BOOL = TensorProto.BOOL

ONNX_TYPES = {"float32": FLOAT, "float16": FLOAT16, "int64": INT64, "int32": TensorProto.INT32,
              "bool": BOOL}

Dims = Sequence[int | str | None]


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._scope = ""
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ------------------------------------------------------------ names and scopes
    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        outer, self._scope = self._scope, f"{self._scope}/{name}"
        try:
            yield
        finally:
            self._scope = outer
        if not outer:  # a top-level scope is a block (the progress bar counts them)
            progress.scope_done(name)

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self._scope}/{hint}_{self._count}"

    # ------------------------------------------------------------ graph interface
    def add_input(self, name: str, elem_type: int, shape: Dims) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, value: str, elem_type: int, shape: Dims) -> None:
        """Expose ``value`` as graph output ``name`` (through an Identity node)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}/Identity"))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def add_output_in_place(self, name: str, value: str, elem_type: int, shape: Dims) -> None:
        """Expose ``value`` as graph output ``name`` by renaming it (no Identity node), when a
        node of this graph makes it and it is not an output yet; else as ``add_output``.

        ONNX Runtime copies a value into an Identity's output when another node also reads
        it: for a KV cache's present keys and values (which the attention reads too) that is
        a second copy of the whole cache per decode step."""
        producers = [n for n in self.nodes if value in n.output]
        if not producers or any(o.name == value for o in self.outputs):
            self.add_output(name, value, elem_type, shape)
            return
        for node in self.nodes:
            for i, x in enumerate(node.input):
                if x == value:
                    node.input[i] = name
            for i, x in enumerate(node.output):
                if x == value:
                    node.output[i] = name
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def expose(self, name: str, elem_type: int, shape: Dims) -> None:
        """Declare graph output ``name`` that a node already writes under that name (no
        Identity: a runtime may then give that node the caller's output buffer, which a
        static KV cache's in-place write needs)."""
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def op_to(self, name: str, op_type: str, *inputs: str, **attrs: object) -> str:
        """Add one node whose single output is named ``name`` (a graph output, see
        ``expose``); returns ``name``."""
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), [name],
                                           name=self.fresh(op_type), **attrs))
        return name

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        """An initializer from ``array`` (converted once; not copied when it is already
        C-contiguous). Inside ``weight_store.holding_weights()`` a parameter (a name without
        the leading ``/``) is kept aside by reference and the graph gets its stub."""
        held = held_weights()
        if held is not None and is_parameter(name):  # a deferred array stays deferred
            arr = array if isinstance(array, Deferred) else np.asarray(array, order="C")
            held[name] = arr
            self.initializers.append(weight_stub(name, arr))
        else:
            self.initializers.append(numpy_helper.from_array(
                np.asarray(realize(array), order="C"), name))
        return name

    def make_graph(self, name: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)

    # ------------------------------------------------------------ nodes and constants
    def op(self, op_type: str, *inputs: str, n_out: int = 1, **attrs: object) -> str:
        """Add one node; returns its (single) output name."""
        outs = self.op_multi(op_type, *inputs, n_out=n_out, **attrs)
        return outs[0]

    def op_multi(self, op_type: str, *inputs: str, n_out: int, **attrs: object) -> list[str]:
        base = self.fresh(op_type)
        outs = [f"{base}_out{i}" if n_out > 1 else f"{base}_out" for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs

    def const(self, value: object, dtype: str | np.dtype) -> str:
        """A constant initializer (deduplicated by dtype, shape and bytes)."""
        arr = np.array(value, dtype=dtype, order="C")  # (ascontiguousarray makes 0-d 1-d)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            self._count += 1
            name = f"/const_{self._count}"
            self._consts[key] = name
            self.add_initializer(name, arr)
        return name

    def i64(self, *values: int) -> str:
        """A 1-D int64 constant."""
        return self.const(list(values), np.int64)

    def scalar(self, value: float | int | bool, dtype: str | np.dtype) -> str:
        return self.const(value, dtype)

    # ------------------------------------------------------------ typed helpers
    def matmul(self, a: str, b: str) -> str:
        return self.op("MatMul", a, b)

    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def reshape(self, x: str, shape: Sequence[int] | str) -> str:
        target = shape if isinstance(shape, str) else self.i64(*shape)
        return self.op("Reshape", x, target)

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", x, perm=list(perm))

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.i64(*axes))

    def concat(self, xs: Sequence[str], axis: int) -> str:
        return self.op("Concat", *xs, axis=axis)

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int],
              axes: Sequence[int]) -> str:
        return self.op("Slice", x, self.i64(*starts), self.i64(*ends), self.i64(*axes))

    def shape(self, x: str, start: int | None = None, end: int | None = None) -> str:
        return self.op("Shape", x, start=start, end=end)

    def dim(self, x: str, axis: int) -> str:
        """The size of one axis of ``x`` as an int64 scalar."""
        return self.op("Squeeze", self.shape(x, axis, axis + 1 if axis != -1 else None),
                       self.i64(0))

    def gather(self, data: str, indices: str, axis: int = 0) -> str:
        return self.op("Gather", data, indices, axis=axis)

    def range(self, start: str, limit: str, delta: str) -> str:
        return self.op("Range", start, limit, delta)

    def where(self, cond: str, a: str, b: str) -> str:
        return self.op("Where", cond, a, b)

    def and_(self, a: str, b: str) -> str:
        return self.op("And", a, b)

    def or_(self, a: str, b: str) -> str:
        return self.op("Or", a, b)

    def not_(self, a: str) -> str:
        return self.op("Not", a)

    def equal(self, a: str, b: str) -> str:
        return self.op("Equal", a, b)

    def less(self, a: str, b: str) -> str:
        return self.op("Less", a, b)

    def less_equal(self, a: str, b: str) -> str:
        return self.op("LessOrEqual", a, b)

    def greater_equal(self, a: str, b: str) -> str:
        return self.op("GreaterOrEqual", a, b)

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        """ReduceMax / ReduceMin / ReduceSum...: axes moved from attribute to input at opset 18
        (ReduceSum at 13)."""
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, x, self.i64(*axes), keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def grouped_matmul(self, a: str, kv: str, heads: int, kv_heads: int,
                       fold_rows: bool = False) -> str:
        """``a`` [B, heads, *batch, M, K] @ ``kv`` [B, kv_heads, *batch, K, N] ->
        [B, heads, *batch, M, N], query head h reading kv head h // (heads / kv_heads).

        ``fold_rows`` (``a`` of rank 4, no ``*batch``): the heads of a group become rows,
        ``a`` is reshaped (no copy: the heads of a group are adjacent) to [B, kv_heads,
        group*M, K], so one GEMM per kv head reads its K or V once (a decode step: M=1, one
        [group, K] x [K, N] product instead of ``group`` vector products), and the result is
        reshaped back. Otherwise the kv operand is broadcast over each group (an Unsqueeze,
        never repeated). Shapes are explicit with ``allowzero`` so empty tensors (batch 0, no
        keys, an empty query chunk) work."""
        if heads == kv_heads:
            return self.matmul(a, kv)
        group = heads // kv_heads
        batch = self.shape(a, 0, 1)
        if fold_rows:
            rows = self.shape(a, 2, 3)
            split = self.concat([batch, self.i64(kv_heads), self.mul(rows, self.i64(group)),
                                 self.shape(a, 3)], 0)
            out = self.matmul(self.op("Reshape", a, split, allowzero=1), kv)
            merged = self.concat([batch, self.i64(heads), rows, self.shape(out, 3)], axis=0)
            return self.op("Reshape", out, merged, allowzero=1)
        split = self.concat([batch, self.i64(kv_heads, group), self.shape(a, 2)], 0)
        out = self.matmul(self.op("Reshape", a, split, allowzero=1), self.unsqueeze(kv, [2]))
        merged = self.concat([batch, self.i64(heads), self.shape(out, 3)], axis=0)
        return self.op("Reshape", out, merged, allowzero=1)
