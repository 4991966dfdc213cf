"""``share-computations``: common-subexpression elimination on the lowered graph.

Two nodes with the same op, domain, inputs and attributes compute the same values; the later
one is dropped and its readers read the first one's outputs. Identical compiler constants
(same dtype, shape and bytes) are merged the same way. Together they build positions, masks,
RoPE tables and biases once for all blocks (and heads) that use the same ones: the lowering
takes a block's positions from the first stream of its chain, so blocks stacked on one input
share them. Nodes in graph order, first one kept: deterministic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ...passes.base import PassResult
from .base import GraphPass
from .graph_utils import copy_model, has_subgraphs, is_parameter, remove_dead

# ops whose two identical calls may differ
NOT_SHAREABLE = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike",
                           "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"})


@dataclass(frozen=True)
class ShareComputationsOptions:
    initializers: bool = True  # merge identical compiler constants too


def _attribute_key(attr: onnx.AttributeProto) -> tuple:
    """A structural key of an attribute, cheap to build (no serialization per node): equal
    when the attributes' serialized bytes are, for attributes made by ``onnx.helper`` (floats
    by their bits, so 0.0 and -0.0 differ as their bytes do); tensors and graphs, rare
    here, by their bytes."""
    floats = struct.pack(f"<{len(attr.floats)}f", *attr.floats)
    nested = (attr.t.SerializeToString(deterministic=True) if attr.HasField("t") else b"",
              tuple(t.SerializeToString(deterministic=True) for t in attr.tensors),
              attr.g.SerializeToString(deterministic=True) if attr.HasField("g") else b"",
              tuple(g.SerializeToString(deterministic=True) for g in attr.graphs))
    return (attr.name, attr.type, attr.ref_attr_name, attr.doc_string, attr.i,
            struct.pack("<f", attr.f), attr.s, tuple(attr.ints), floats, tuple(attr.strings),
            nested if any(nested) else None)


def _node_key(node: onnx.NodeProto, rename: dict[str, str]) -> tuple:
    """What makes two nodes compute the same values, their inputs as renamed so far."""
    attrs = tuple(sorted((_attribute_key(a) for a in node.attribute), key=lambda k: k[0]))
    return (node.domain, node.op_type, tuple(rename.get(i, i) for i in node.input),
            len(node.output), attrs)


class ShareComputations(GraphPass):
    name = "share-computations"
    Options = ShareComputationsOptions

    def run(self, program: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        if has_subgraphs(program.graph):  # inner graphs may read outer names: leave it
            return PassResult(program, False)
        graph = program.graph
        rename: dict[str, str] = {}
        if self.options.initializers:
            rename.update(self._merge_constants(graph))
        graph_outputs = {o.name for o in graph.output}
        first: dict[tuple, onnx.NodeProto] = {}
        for node in graph.node:  # decide on the input, read only; edit a copy if needed
            if node.op_type in NOT_SHAREABLE or graph_outputs.intersection(node.output):
                continue
            key = _node_key(node, rename)
            if key in first:
                rename.update(zip(node.output, first[key].output, strict=True))
            else:
                first[key] = node
        if not rename:
            return PassResult(program, False)
        model = copy_model(program)  # the weight-free model: no weight bytes are copied
        for node in model.graph.node:
            if any(i in rename for i in node.input):
                renamed = [rename.get(i, i) for i in node.input]
                del node.input[:]
                node.input.extend(renamed)
        remove_dead(model.graph)  # the dropped duplicates and constants are read by nothing now
        return PassResult(model, True)

    @staticmethod
    def _merge_constants(graph: onnx.GraphProto) -> dict[str, str]:
        first: dict[tuple, str] = {}
        rename: dict[str, str] = {}
        for init in graph.initializer:
            if is_parameter(init.name):
                continue
            arr = numpy_helper.to_array(init)
            key = (init.data_type, arr.shape, arr.tobytes())
            if key in first:
                rename[init.name] = first[key]
            else:
                first[key] = init.name
        return rename
