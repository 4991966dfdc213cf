"""attndsl: a declarative attention-architecture compiler (YAML / .attn -> ONNX).

The public API (``attndsl.api``): ``Spec`` objects to load, build, edit and write specs;
``compile`` / ``compile_to`` to ONNX; ``run`` / ``execute`` / ``verify`` in ONNX Runtime
against the numpy reference; ``check`` to summarize a spec's cost.
"""

import sys
import types


class _Package(types.ModuleType):
    """The package's module type. ``attndsl.compile`` is the public function below, and also
    the name of the module attndsl/compile.py: the import system binds a submodule, once
    loaded, as an attribute of its package, which would hide the function. The module stays
    importable (``from attndsl.compile import ...`` reads it from ``sys.modules``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "compile" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

from .api import (  # noqa: E402 - after the module type is set
    CompileResult,
    OutputCheck,
    RunResult,
    Spec,
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
from .errors import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError  # noqa: E402
from .ir import Model, print_ir  # noqa: E402

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``Summary`` is imported when first asked for (see ``attndsl.api``)."""
    if name == "Summary":
        from .api import Summary

        return Summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AttnDSLError", "CompileResult", "Model", "OutputCheck", "RunResult", "Spec", "SpecError",
    "SpecErrors", "SpecSyntaxError", "Summary", "VerifyReport", "__version__", "check",
    "compile", "compile_to", "draw", "execute", "ir_text", "load_spec", "parse_spec",
    "print_ir", "run", "verify",
]
