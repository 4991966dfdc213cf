"""``fold-constants``: compile-time evaluation of the parts of the graph that do not depend on
the inputs, stored as initializers or kept as index arithmetic, whichever is smaller.

A node is constant when all its inputs are compiler constants or constant values; ``Shape``
of a value whose (inferred) dims are static is constant too, so with fixed sequence lengths
positions, masks, RoPE tables and position biases are all constant. Parameters (weights) are
not constants here: they keep their names (a contract) and their own initializers.

Every constant value read by a non-constant node is a candidate. It becomes an initializer
when its bytes are at most the bytes of the nodes and private constants that compute it, plus
``slack_bytes``; otherwise the same question is asked of its node's inputs, so a causal mask
[8, 8] becomes an initializer, while at [4096, 4096] (16 MB against a few hundred bytes of
Range/LessOrEqual) the arithmetic stays and only its scalar sizes fold. Values larger than
``max_eval_bytes`` are never computed at compile time. Evaluation uses
``onnx.reference.ReferenceEvaluator``, one node at a time, in graph order: deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ...passes.base import PassResult
from .base import GraphPass
from .graph_utils import (
    DEFAULT_DOMAINS,
    copy_model,
    default_opset,
    has_subgraphs,
    is_parameter,
    remove_dead,
)

# output size from the broadcast of the inputs
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Min", "Max", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift"})
# output no larger than the largest input
NOT_GROWING = frozenset({
    "Identity", "Cast", "CastLike", "Not", "Neg", "Abs", "Sign", "Floor", "Ceil", "Round",
    "Sqrt", "Reciprocal", "Exp", "Log", "Cos", "Sin", "Tan", "Tanh", "Sigmoid", "Relu", "Erf",
    "IsInf", "IsNaN", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
    "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean", "ReduceProd", "Softmax", "Clip",
    "CumSum", "ArgMax", "ArgMin", "Trilu"})
# bool outputs
BOOLEAN = frozenset({"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or",
                     "Xor", "Not", "IsInf", "IsNaN"})


@dataclass(frozen=True)
class FoldConstantsOptions:
    slack_bytes: int = 256  # how much larger than its arithmetic an initializer may be
    # values larger than this are not computed (nor stored: only a cone holding as many bytes
    # of constants, e.g. a random(...) table, could justify storing them)
    max_eval_bytes: int = 1 << 20


class FoldConstants(GraphPass):
    name = "fold-constants"
    Options = FoldConstantsOptions

    max_rounds = 8  # a fold can make more shapes static (a folded Range has a length)

    def run(self, program: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        if has_subgraphs(program.graph):
            return PassResult(program, False)
        model = copy_model(program)  # the weight-free model (lower.weight_store)
        changed = False
        for _ in range(self.max_rounds):
            if not self.fold_once(model):
                break
            changed = True
        return PassResult(model if changed else program, changed)

    def fold_once(self, model: onnx.ModelProto) -> bool:
        """One round, in place: evaluate, store the chosen values, drop what is dead."""
        graph = model.graph
        folder = _Folder(graph, default_opset(model), _static_dims(model), self.options)
        chosen = folder.choose()
        if chosen:
            stored = set(chosen)
            kept = [n for n in graph.node if not (len(n.output) == 1 and n.output[0] in stored)]
            del graph.node[:]
            graph.node.extend(kept)
            graph.initializer.extend(numpy_helper.from_array(folder.values[v], v) for v in chosen)
        return remove_dead(graph) or bool(chosen)


class _Folder:
    def __init__(self, graph: onnx.GraphProto, opset: int,
                 static: dict[str, tuple[int | None, ...]], options: FoldConstantsOptions):
        self.graph = graph
        self.opset = opset
        self.static = static
        self.options = options
        self.init_bytes = {i.name: i.ByteSize() for i in graph.initializer
                           if not is_parameter(i.name)}
        self.values: dict[str, np.ndarray] = {
            i.name: numpy_helper.to_array(i) for i in graph.initializer
            if not is_parameter(i.name)}
        self.producer: dict[str, int] = {}  # constant value -> index of the node computing it
        self.readers: dict[str, set[int]] = {}
        self._node_bytes: dict[int, int] = {}
        outputs = {o.name for o in graph.output}
        for index, node in enumerate(graph.node):
            for name in node.input:
                self.readers.setdefault(name, set()).add(index)
            if (node.domain in DEFAULT_DOMAINS and len(node.output) == 1
                    and node.output[0] not in outputs):
                value = self.evaluate(node)
                if value is not None:
                    self.values[node.output[0]] = value
                    self.producer[node.output[0]] = index

    def node_bytes(self, index: int) -> int:
        """The serialized size of node ``index``, computed once (cones overlap)."""
        size = self._node_bytes.get(index)
        if size is None:
            size = self._node_bytes[index] = self.graph.node[index].ByteSize()
        return size

    # ------------------------------------------------------------ evaluation
    def evaluate(self, node: onnx.NodeProto) -> np.ndarray | None:
        if node.op_type == "Shape":
            x = node.input[0]
            dims = self.values[x].shape if x in self.values else self.static.get(x)
            if dims is None:
                return None
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            part = dims[attrs.get("start", 0):attrs.get("end")]
            return None if None in part else np.array(part, dtype=np.int64)
        if any(name and name not in self.values for name in node.input):
            return None
        args = [self.values[name] if name else None for name in node.input]
        size = _output_elements(node, args)
        if size is None or size * _output_itemsize(node, args) > self.options.max_eval_bytes:
            return None
        feeds = {name: self.values[name] for name in node.input if name}
        out = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)[0]
        return np.asarray(out)

    # ------------------------------------------------------------ which values to store
    def choose(self) -> list[str]:
        """The constant values to store, in graph order of their first non-constant reader."""
        chosen: list[str] = []
        seen: set[str] = set()
        constant_nodes = set(self.producer.values())
        for index, node in enumerate(self.graph.node):
            if index not in constant_nodes:
                for name in node.input:
                    self._cut(name, chosen, seen)
        return chosen

    def _cut(self, name: str, chosen: list[str], seen: set[str]) -> None:
        if name in seen or name not in self.producer:
            return
        seen.add(name)
        if self.values[name].nbytes <= self.cost(name) + self.options.slack_bytes:
            chosen.append(name)
            return
        node = self.graph.node[self.producer[name]]
        if node.op_type != "Shape":
            for arg in node.input:
                self._cut(arg, chosen, seen)

    def cost(self, name: str) -> int:
        """Bytes of the constant nodes computing ``name`` and of the compiler constants only
        they read."""
        cone: set[int] = set()
        consts: set[str] = set()
        stack = [name]
        while stack:
            value = stack.pop()
            index = self.producer.get(value)
            if index is None:
                if value in self.init_bytes:
                    consts.add(value)
                continue
            if index in cone:
                continue
            cone.add(index)
            node = self.graph.node[index]
            if node.op_type != "Shape":  # Shape reads dims, not data
                stack.extend(node.input)
        total = sum(self.node_bytes(i) for i in cone)
        return total + sum(self.init_bytes[c] for c in consts if self.readers[c] <= cone)


def _output_elements(node: onnx.NodeProto, args: list[np.ndarray | None]) -> int | None:
    """Elements of the node's output, from its inputs, before computing it (None: unknown)."""
    op = node.op_type
    shapes = [a.shape for a in args if a is not None]
    try:
        if op in ELEMENTWISE:
            return math.prod(np.broadcast_shapes(*shapes))
        if op in NOT_GROWING:
            return max(math.prod(s) for s in shapes)
        if op == "Range":
            start, limit, delta = (a.item() for a in args)
            return max(math.ceil((limit - start) / delta), 0)
        if op == "Expand":
            return math.prod(np.broadcast_shapes(shapes[0], tuple(args[1].tolist())))
        if op == "ConstantOfShape":
            return math.prod(args[0].tolist())
        if op == "Tile":
            return math.prod(shapes[0]) * math.prod(args[1].tolist())
        if op == "Gather":
            data, indices = args
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            return data.size // max(data.shape[axis], 1) * indices.size
        if op == "Concat":
            return sum(math.prod(s) for s in shapes)
    except (ValueError, ZeroDivisionError, IndexError):
        return None
    return None


def _output_itemsize(node: onnx.NodeProto, args: list[np.ndarray | None]) -> int:
    """Bytes per element of the node's output (an upper bound where unsure)."""
    if node.op_type in BOOLEAN:
        return 1
    if node.op_type == "Cast":
        to = next(a.i for a in node.attribute if a.name == "to")
        return helper.tensor_dtype_to_np_dtype(to).itemsize
    if node.op_type == "Where":
        return args[1].itemsize
    return max((a.itemsize for a in args if a is not None), default=8)


def _static_dims(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Value name -> its dims as inferred (None where symbolic), for values of known rank.
    Shape inference takes the parameters' shapes from their stubs: it never reads their
    data (only ops such as Reshape read an input's values, and those read constants)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):
        return {}
    out: dict[str, tuple[int | None, ...]] = {}
    graph = inferred.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        t = info.type.tensor_type
        if t.HasField("shape"):
            out[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                   for d in t.shape.dim)
    return out
