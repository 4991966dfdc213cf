"""``share-computations``: common-subexpression elimination on the lowered graph.

Two nodes with the same op, domain, inputs and attributes compute the same values; the later
one is dropped and its readers read the first one's outputs. Identical compiler constants
(same dtype, shape and bytes) are merged the same way. Together they build positions, masks,
RoPE tables and biases once for all blocks (and heads) that use the same ones: the lowering
takes a block's positions from the first stream of its chain, so blocks stacked on one input
share them. Nodes in graph order, first one kept: deterministic.
"""

from __future__ import annotations

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


def _node_key(node: onnx.NodeProto) -> tuple:
    attrs = tuple(sorted((a.name, a.SerializeToString(deterministic=True))
                         for a in node.attribute))
    return node.domain, node.op_type, tuple(node.input), len(node.output), attrs


class ShareComputations(GraphPass):
    name = "share-computations"
    Options = ShareComputationsOptions

    def run(self, program: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        if has_subgraphs(program.graph):  # inner graphs may read outer names: leave it
            return PassResult(program, False)
        model = copy_model(program)
        graph = model.graph
        rename: dict[str, str] = {}
        if self.options.initializers:
            rename.update(self._merge_constants(graph))
        graph_outputs = {o.name for o in graph.output}
        first: dict[tuple, onnx.NodeProto] = {}
        for node in graph.node:
            if any(i in rename for i in node.input):
                renamed = [rename.get(i, i) for i in node.input]
                del node.input[:]
                node.input.extend(renamed)
            if node.op_type in NOT_SHAREABLE or graph_outputs.intersection(node.output):
                continue
            key = _node_key(node)
            if key in first:
                rename.update(zip(node.output, first[key].output, strict=True))
            else:
                first[key] = node
        if not rename:
            return PassResult(program, False)
        remove_dead(graph)  # the dropped duplicates and constants are read by nothing now
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
