"""attndsl: a declarative attention-architecture compiler (YAML / .attn -> ONNX).

The public API (``attndsl.api``): ``Spec`` objects to load, build, edit and write specs;
``compile`` / ``compile_to`` to ONNX; ``run`` / ``execute`` / ``verify`` in ONNX Runtime
against the numpy reference; ``check`` to summarize a spec's cost; ``import_hf`` for the
attention of a Hugging Face checkpoint.
"""

from .api import (
    CompileResult,
    DecodeResult,
    OutputCheck,
    RunResult,
    Spec,
    Summary,
    VerifyReport,
    check,
    compile,
    compile_to,
    decode,
    draw,
    execute,
    import_hf,
    ir_text,
    load_spec,
    parse_spec,
    run,
    verify,
)
from .errors import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError
from .ir import Model, print_ir
from .version import __version__

__all__ = [
    "AttnDSLError", "CompileResult", "DecodeResult", "Model", "OutputCheck", "RunResult", "Spec",
    "SpecError", "SpecErrors", "SpecSyntaxError", "Summary", "VerifyReport", "__version__",
    "check", "compile", "compile_to", "decode", "draw", "execute", "import_hf", "ir_text",
    "load_spec", "parse_spec", "print_ir", "run", "verify",
]
