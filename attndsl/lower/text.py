"""A lowered model as reviewable text: the graph in ONNX's textual syntax, weights elided.

``graph_text`` is what the golden graph tests (``tests/golden/graphs``) compare, so that a
change in a lowering shows up as a readable line diff rather than as different bytes. The
text leaves out what says nothing about the lowering: initializer data (seeded random
weights; only their names, element types and shapes are listed, plus the values of tiny
constants such as axes, shapes and fill values, which are lowering decisions), the spec
source kept in the metadata, and version strings.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.printer
from onnx import numpy_helper

#: Initializers with at most this many elements have their values printed.
SMALL = 8

#: Metadata keys left out of the text: the spec source and version strings.
_SKIPPED_METADATA = frozenset({"attndsl.spec", "attndsl.version"})


def _type_text(tensor: onnx.TensorProto) -> str:
    elem = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    name = "bool" if elem == np.bool_ else np.dtype(elem).name
    return f"{name}[{','.join(str(d) for d in tensor.dims)}]"


def _initializer_line(tensor: onnx.TensorProto) -> str:
    line = f"  {_type_text(tensor)} {tensor.name}"
    if int(np.prod(tensor.dims, dtype=np.int64)) <= SMALL:
        values = numpy_helper.to_array(tensor).reshape(-1)
        line += " = {" + ", ".join(str(v) for v in values) + "}"
    return line


def graph_text(model: onnx.ModelProto) -> str:
    """The graph of ``model`` as text (``onnx.printer`` syntax), without initializer data.

    Sections: opsets and metadata (without the spec source and version strings), the
    initializers one per line (type, shape, name; values only for tensors of at most
    ``SMALL`` elements), then the graph's signature and nodes as ``onnx.printer`` writes
    them, and any model-local functions.
    """
    lines = [f"ir_version: {model.ir_version}"]
    lines += [f"opset: {o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import]
    lines += [f"metadata: {p.key} = {p.value}" for p in model.metadata_props
              if p.key not in _SKIPPED_METADATA]
    lines.append("initializers:")
    lines += [_initializer_line(t) for t in model.graph.initializer]
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    del graph.initializer[:]
    lines.append(onnx.printer.to_text(graph).rstrip())
    lines += [onnx.printer.to_text(f).rstrip() for f in model.functions]
    return "\n".join(lines) + "\n"
