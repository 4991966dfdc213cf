"""Small helpers over ``onnx.GraphProto`` shared by the graph passes.

Names: the lowering names every value and constant it makes with a leading ``/``; other
initializers are the model's parameters (named as the weights, a contract), which graph
passes never rename, merge or fold away.
"""

from __future__ import annotations

import onnx

from ..weight_store import is_parameter

__all__ = ["DEFAULT_DOMAINS", "copy_model", "default_opset", "has_subgraphs", "is_parameter",
           "remove_dead"]

DEFAULT_DOMAINS = ("", "ai.onnx")


def copy_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model the graph passes run on: the weight-free view, whose parameters
    are stubs (``lower.weight_store``), so no weight bytes are copied."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def has_subgraphs(graph: onnx.GraphProto) -> bool:
    kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in kinds for n in graph.node for a in n.attribute)


def default_opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS)


def remove_dead(graph: onnx.GraphProto) -> bool:
    """Drop nodes no graph output needs and compiler constants nothing reads (in place).
    Parameters and graph inputs stay. Returns whether anything was dropped."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    inits = [i for i in graph.initializer if is_parameter(i.name) or i.name in needed]
    changed = len(keep) != len(graph.node) or len(inits) != len(graph.initializer)
    if changed:
        _replace(graph.node, reversed(keep))
        _replace(graph.initializer, inits)
        _replace(graph.value_info, [v for v in graph.value_info if v.name in needed])
    return changed


def _replace(field, items) -> None:
    items = list(items)
    del field[:]
    field.extend(items)
