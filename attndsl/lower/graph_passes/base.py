"""What a graph pass is: a ``passes.base.Pass`` over the lowered ``onnx.ModelProto``, run
after lowering (the IR passes run before it, in ``attndsl.passes``)."""

from __future__ import annotations

from typing import ClassVar

import onnx

from ...passes.base import Pass, Stage


class GraphPass(Pass[onnx.ModelProto]):
    """A pass over the lowered ONNX model; it never mutates its input (it edits a copy)."""

    stage: ClassVar[Stage] = "graph"
