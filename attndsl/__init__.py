"""attndsl: a declarative attention-architecture compiler (YAML / .attn -> ONNX)."""

from .api import load_spec, parse_spec
from .errors import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError
from .ir import Model, print_ir
from .version import __version__

__all__ = [
    "AttnDSLError", "Model", "SpecError", "SpecErrors", "SpecSyntaxError", "__version__",
    "load_spec", "parse_spec", "print_ir",
]
