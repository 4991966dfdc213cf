"""The public Python API; the command line (``attndsl.cli``) is a thin shell over it.

- ``Spec``: a spec loaded (``Spec.load``, ``Spec.parse``) or built (``Spec.new``), edited
  (methods returning new specs), checked into IR (``model()``) and written back as YAML or
  ``.attn`` (``to_yaml``, ``to_attn``, ``save``).
- ``compile`` / ``compile_to``: ONNX models, as ``attndsl compile``.
- ``execute`` / ``run`` / ``verify``: ONNX Runtime runs, checked against the numpy reference,
  as ``attndsl run [--verify]``; ``decode``: a generation loop (prefill, then one position
  at a time with the KV cache).
- ``import_hf`` / ``import_hf_to``: a Hugging Face checkpoint's attention as a Spec and its
  weights, as ``attndsl import-hf``.
- ``check`` (with ``format_summary``), ``ir_text``, ``convert``, ``draw``: what ``attndsl
  check``, ``ir``, ``convert`` and ``viz`` do.

Every function takes a spec as a file path, a ``Spec`` or a checked IR ``Model``. Bad specs
raise ``SpecError`` / ``SpecErrors`` with locations; bad options raise ``AttnDSLError``.
"""

from ..lower.targets import DEFAULT_OPSET, OPSETS, SPARSE_MODES, TARGET_NAMES, opset_ranges
from ..summary import Summary
from ._check import check, draw, format_summary
from ._compile import CompileResult, SpecLike, WeightsLike, compile, compile_to, convert, ir_text
from ._decode import DecodeResult, decode
from ._import import ImportReport, import_hf, import_hf_to
from ._run import (
    TOLERANCE,
    OutputCheck,
    RunResult,
    VerifyReport,
    compare,
    execute,
    load_onnx,
    read_inputs,
    run,
    save_outputs,
    verify,
)
from ._spec import SYNTAXES, Spec, load_spec, parse_spec

__all__ = [
    "DEFAULT_OPSET", "OPSETS", "SPARSE_MODES", "SYNTAXES", "TARGET_NAMES", "opset_ranges",
    "TOLERANCE", "CompileResult", "DecodeResult", "decode", "ImportReport", "import_hf",
    "import_hf_to", "OutputCheck",
    "RunResult", "Spec", "SpecLike",
    "Summary", "VerifyReport", "WeightsLike", "check", "compare", "compile", "compile_to",
    "convert", "draw", "execute", "format_summary", "ir_text", "load_onnx", "load_spec",
    "parse_spec", "read_inputs", "run", "save_outputs", "verify",
]
