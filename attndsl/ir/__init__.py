"""The IR: nodes, the AST -> IR builder and the printer."""

from .build import build_ir
from .nodes import Block, Dim, Input, Model, Output, Rope
from .printer import print_ir

__all__ = ["Block", "Dim", "Input", "Model", "Output", "Rope", "build_ir", "print_ir"]
