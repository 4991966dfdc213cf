"""attndsl: a declarative attention-architecture compiler (YAML / .attn -> ONNX).

The public API (``attndsl.api``): ``Spec`` objects to load, build, edit and write specs;
``compile`` / ``compile_to`` to ONNX; ``run`` / ``execute`` / ``verify`` in ONNX Runtime
against the numpy reference; ``check`` to summarize a spec's cost.
"""

# `attndsl.compile` names both the module attndsl/compile.py and the function below. Loading
# the module first, then binding the function, keeps the package attribute the function
# (a later `from attndsl.compile import ...` finds the module in sys.modules and leaves the
# attribute alone).
from . import compile as _compile_module  # noqa: F401
from .api import (
    CompileResult,
    OutputCheck,
    RunResult,
    Spec,
    Summary,
    VerifyReport,
    check,
    compile,
    compile_to,
    draw,
    execute,
    ir_text,
    load_spec,
    parse_spec,
    run,
    verify,
)
from .errors import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError
from .ir import Model, print_ir

__version__ = "0.1.0"

__all__ = [
    "AttnDSLError", "CompileResult", "Model", "OutputCheck", "RunResult", "Spec", "SpecError",
    "SpecErrors", "SpecSyntaxError", "Summary", "VerifyReport", "__version__", "check",
    "compile", "compile_to", "draw", "execute", "ir_text", "load_spec", "parse_spec",
    "print_ir", "run", "verify",
]
