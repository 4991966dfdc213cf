"""Running from Python: ``execute`` / ``run`` (ONNX Runtime on given or random inputs) and
``verify`` (every output against the float64 numpy reference), plus the ``.npz`` reading and
writing the command line uses."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from ..errors import AttnDSLError, InputError
from ..ir import Model
from . import _spec
from ._compile import SpecLike, WeightsLike, _compile, model_of

if TYPE_CHECKING:
    import numpy as np
    import onnx

    RunTarget: TypeAlias = SpecLike | onnx.ModelProto
    """A spec (path, ``Spec`` or ``Model``), an attndsl ``.onnx`` file's path or its
    ModelProto."""

__all__ = ["RELATIVE_TOLERANCE", "TOLERANCE", "OutputCheck", "RunResult", "VerifyReport",
           "compare", "execute", "load_onnx", "read_inputs", "run", "save_outputs", "verify"]

TOLERANCE: dict[str, float] = {"float32": 1e-4, "float16": 2e-2}
"""The max abs error ``verify`` allows by model dtype (float16 values carry about 3 decimal
digits), plus ``RELATIVE_TOLERANCE`` of the reference value's magnitude."""
RELATIVE_TOLERANCE: dict[str, float] = {"float32": 1e-5, "float16": 1e-2}
"""The part of an output's largest reference magnitude ``verify`` allows on top of
``TOLERANCE``: a float32 output whose values reach 1e9 (a spec with huge weights or norms)
is only known to about 1e2, in every element (RoPE, softmax and sums mix elements, so a
small element can carry the rounding of large ones), so a fixed absolute bound alone would
fail every such model; about 100 float32 rounding steps, 10 float16 ones."""

InputsLike: TypeAlias = "Mapping[str, np.ndarray] | str | os.PathLike[str]"


# ---------------------------------------------------------------- files


def read_inputs(path: str | os.PathLike[str], expected: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays by name from an ``.npz`` file; its names must be exactly ``expected``."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except FileNotFoundError:
        raise InputError(f"cannot read inputs '{path}': no such file") from None
    except Exception as err:  # not an npz, corrupt archive...
        raise InputError(f"cannot read inputs '{path}': {err}") from None
    missing = [n for n in expected if n not in arrays]
    extra = [n for n in arrays if n not in expected]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(extra)}"] if extra else []
        raise InputError(f"inputs '{path}' do not match the model: {'; '.join(parts)}",
                         hint=f"the model's inputs are {', '.join(expected)}")
    return arrays


def save_outputs(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays by name to an ``.npz`` file atomically (``fileio.open_atomic``: a
    temporary file, then ``os.replace``; Ctrl-C leaves no temporary file)."""
    import numpy as np

    from ..fileio import open_atomic

    try:
        with open_atomic(path) as f:
            np.savez(f, **arrays)
    except OSError as err:
        raise AttnDSLError(f"cannot write '{path}': {err.strerror or err}") from None


def load_onnx(path: str | os.PathLike[str], external_data: bool = True) -> onnx.ModelProto:
    """An ONNX file, read and checked as untrusted input (``api/_untrusted.py``): bounded in
    size, parsed before anything else, external data only from inside the model's folder,
    standard and ``com.microsoft`` operators only. InputError for anything wrong.
    ``external_data=False``: external data is checked but not read (the tensors keep their
    references into the files next to the model)."""
    from ..limits import current
    from ._untrusted import load_untrusted, max_model_bytes

    return load_untrusted(path, max_model_bytes(current().max_weights_bytes),
                          read_external=external_data)


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _spec_of(proto: onnx.ModelProto, where: str) -> Model:
    """The IR of the spec a model made by attndsl carries in its metadata, checked against
    the graph (``_untrusted.check_matches_spec``)."""
    from ._untrusted import check_matches_spec

    meta = _metadata(proto)
    if "attndsl.spec" not in meta:
        raise InputError(f"'{where}' was not produced by attndsl (no 'attndsl.spec' metadata)")
    try:
        model = _spec.parse_spec(meta["attndsl.spec"], f"{where}#attndsl.spec")
    except AttnDSLError as err:
        raise InputError(f"'{where}': the spec in its attndsl.spec metadata is not valid: "
                         f"{str(err).splitlines()[0]}") from None
    check_matches_spec(where, proto, model)
    return model


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class RunResult:
    """One run: the spec's IR, the ONNX model that ran, its inputs and outputs by name (graph
    order), the ONNX Runtime execution provider that ran it, and a note when ``provider
    'auto'`` fell back to the CPU (else None)."""

    model: Model
    proto: onnx.ModelProto
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    provider: str
    note: str | None = None
    model_dir: Path | None = None  # where the external data of a model run from a file lies


def _model_and_proto(spec_or_model: RunTarget,
                     **options: object) -> tuple[Model, onnx.ModelProto]:
    """A spec compiles (with ``options``); a ``.onnx`` file or a ModelProto made by attndsl is
    used as it is, with the spec in its metadata."""
    import onnx

    if isinstance(spec_or_model, onnx.ModelProto):
        return _spec_of(spec_or_model, "<ModelProto>"), spec_or_model
    if (isinstance(spec_or_model, (str, os.PathLike))
            and Path(spec_or_model).suffix.lower() == ".onnx"):
        # ONNX Runtime loads the weights from the file itself; the proto keeps references
        proto = load_onnx(spec_or_model, external_data=False)
        return _spec_of(proto, str(spec_or_model)), proto
    model = model_of(spec_or_model)
    return model, _compile(model, **options)[0]  # type: ignore[arg-type]


def _random_inputs(model: Model, sizes: Mapping[str, int] | None, seed: int,
                   past_len: int) -> dict[str, np.ndarray]:
    from ..inputs import random_inputs
    from ..limits import check_run, input_shapes
    from ..summary import check_sizes

    for name, value in (("seed", seed), ("past_len", past_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AttnDSLError(f"{name} must be a non-negative integer, got {value!r}")
    if sizes is not None and not all(isinstance(v, int) and not isinstance(v, bool)
                                     for v in dict(sizes).values()):
        raise AttnDSLError(f"sizes must map dim names to ints, got {dict(sizes)!r}")
    full = check_sizes(model, sizes or {}, default_len=7, default_batch=2)
    check_run(model, input_shapes(model, full, past_len), past_len)
    return random_inputs(model, full, seed=seed, past_len=past_len)


def execute(spec_or_model: RunTarget, inputs: InputsLike | None = None, *,
            sizes: Mapping[str, int] | None = None, past_len: int = 0, seed: int = 0,
            provider: str = "cpu", opset: int = 18, target: str = "portable",
            sparse: str = "auto", block_size: int | None = None, seq_hint: int | None = None,
            passes: str | Sequence[str] | None = None, weights: WeightsLike | None = None,
            on_note: Callable[[str], None] | None = None) -> RunResult:
    """Run a spec (compiled with the options of ``compile``), an attndsl ``.onnx`` file or
    ModelProto in ONNX Runtime, as ``attndsl run`` does; the whole result.

    ``inputs``: arrays by graph input name, or an ``.npz`` file of them; None: random valid
    inputs (``sizes`` of dynamic dims, default batch 2 and 7 for the others; ``past_len``
    cached positions; ``seed``). ``provider``: ``'cpu'``, ``'cuda'`` (an error without CUDA)
    or ``'auto'`` (CUDA when available, else the CPU; ``on_note`` is then called with a
    one-line note before the run)."""
    from ..runtime import make_session, run_session

    model, proto = _model_and_proto(spec_or_model, opset=opset, target=target, sparse=sparse,
                                    block_size=block_size, seq_hint=seq_hint, passes=passes,
                                    weights=weights)
    if inputs is None:
        arrays = _random_inputs(model, sizes, seed, past_len)
    elif isinstance(inputs, (str, os.PathLike)):
        arrays = read_inputs(inputs, [i.name for i in proto.graph.input])
    elif isinstance(inputs, Mapping):
        arrays = dict(inputs)
    else:
        raise AttnDSLError(f"inputs must be arrays by name or an .npz path, got "
                           f"{type(inputs).__name__}")
    from ..limits import check_run

    check_run(model, {k: tuple(getattr(v, "shape", ())) for k, v in arrays.items()})
    # a file by path: ONNX Runtime finds (and maps) its external data next to it
    is_file = (isinstance(spec_or_model, (str, os.PathLike))
               and Path(spec_or_model).suffix.lower() == ".onnx")
    try:
        session = make_session(Path(spec_or_model) if is_file else proto, provider=provider)
    except AttnDSLError:
        raise
    except Exception as err:  # ONNX Runtime refuses a file given to it: bad input, not a bug
        if not is_file:
            raise
        raise InputError(f"ONNX Runtime cannot load '{spec_or_model}': "
                         f"{str(err).splitlines()[0][:500]}") from None
    note = getattr(session, "fallback_note", None)
    if note and on_note is not None:
        on_note(note)
    outputs = run_session(session, arrays)
    return RunResult(model, proto, arrays, outputs, session.get_providers()[0], note,
                     Path(spec_or_model).parent if is_file else None)


def run(spec_or_model: RunTarget, inputs: InputsLike | None = None, *,
        sizes: Mapping[str, int] | None = None, past_len: int = 0, seed: int = 0,
        provider: str = "cpu", opset: int = 18, target: str = "portable",
        sparse: str = "auto", block_size: int | None = None, seq_hint: int | None = None,
        passes: str | Sequence[str] | None = None,
        weights: WeightsLike | None = None) -> dict[str, np.ndarray]:
    """The outputs by name (graph order) of a run; arguments as ``execute``."""
    return execute(spec_or_model, inputs, sizes=sizes, past_len=past_len, seed=seed,
                   provider=provider, opset=opset, target=target, sparse=sparse,
                   block_size=block_size, seq_hint=seq_hint, passes=passes,
                   weights=weights).outputs


# ---------------------------------------------------------------- verifying


@dataclass(frozen=True)
class OutputCheck:
    """One output against the reference: its max abs error (None: the model lacks the
    output; inf: its shape cannot be compared) and whether it is within the tolerance with
    the expected shape."""

    name: str
    max_abs_error: float | None
    ok: bool

    @property
    def missing(self) -> bool:
        return self.max_abs_error is None


@dataclass(frozen=True)
class VerifyReport:
    """Every output of a run against the float64 numpy reference."""

    tolerance: float
    checks: tuple[OutputCheck, ...]
    relative_tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every output is there, has the expected shape and is within the
        tolerance (a NaN never is)."""
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """The names of the outputs that failed."""
        return tuple(c.name for c in self.checks if not c.ok)

    @property
    def max_errors(self) -> dict[str, float | None]:
        """Output name -> max abs error (None for a missing output)."""
        return {c.name: c.max_abs_error for c in self.checks}


class _Initializers(Mapping[str, "np.ndarray"]):
    """The weights the model really holds (its initializers are named as the weights), each
    decoded from the model only when the reference reads it: ``run --verify`` never holds
    an array copy of every weight at once."""

    def __init__(self, proto: onnx.ModelProto, model: Model, folder: Path | None = None):
        tensors = {t.name: t for t in proto.graph.initializer}
        self._folder = folder
        names = list(model.weight_shapes())
        missing = [n for n in names if n not in tensors]
        if missing:
            raise InputError(f"the model lacks the weights {', '.join(missing)}")
        self._tensors = {n: tensors[n] for n in names}

    def __getitem__(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        from ._untrusted import read_external_tensor

        tensor = self._tensors[name]
        if self._folder is not None:  # a model run from its file: external data read now
            tensor = read_external_tensor(str(self._folder), self._folder, tensor)
        return numpy_helper.to_array(tensor)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _initializers(proto: onnx.ModelProto, model: Model,
                  folder: Path | None = None) -> Mapping[str, np.ndarray]:
    """``_Initializers``: the model's weights by name, decoded lazily (read from the files
    in ``folder`` when they are external data)."""
    return _Initializers(proto, model, folder)


def _within(got: np.ndarray, want: np.ndarray, tol: float, rtol: float) -> bool:
    """Every value within ``tol + rtol * max|want|`` (a NaN never is)."""
    import numpy as np

    if got.shape != want.shape:
        return False
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(got - want) <= tol + rtol * scale))


def _max_abs_error(got: np.ndarray, want: np.ndarray) -> float:
    import numpy as np

    if not want.size:
        return 0.0
    try:
        return float(np.max(np.abs(got - want)))
    except ValueError:  # shapes that do not broadcast, an empty output
        return math.inf


def compare(result: RunResult, tolerance: float | None = None,
            relative_tolerance: float | None = None) -> VerifyReport:
    """The outputs of ``result`` against the reference evaluated on its inputs, with the
    weights its model holds (``tolerance``: by default ``TOLERANCE`` of the model's dtype;
    ``relative_tolerance`` of the output's largest reference magnitude is allowed on top of
    it, by default (when neither is given)
    ``RELATIVE_TOLERANCE`` of the dtype)."""
    import numpy as np

    from ..lower.pipeline import model_after, parse_pass_list
    from ..reference import run_reference

    # the initializers follow the IR the compile-time passes made (fused, folded...)
    passes = parse_pass_list(_metadata(result.proto).get("attndsl.passes", ""))
    model = model_after(result.model, passes)
    expected = run_reference(model, _initializers(result.proto, model, result.model_dir),
                             result.inputs)
    tol = TOLERANCE[model.dtype] if tolerance is None else float(tolerance)
    if relative_tolerance is not None:
        rtol = float(relative_tolerance)
    else:  # an explicit absolute tolerance is the whole bound unless a relative one is given
        rtol = RELATIVE_TOLERANCE[model.dtype] if tolerance is None else 0.0
    checks = []
    for name, want in expected.items():
        if name not in result.outputs:
            checks.append(OutputCheck(name, None, False))
            continue
        got = np.asarray(result.outputs[name], np.float64)
        err = _max_abs_error(got, want)
        checks.append(OutputCheck(name, err, _within(got, want, tol, rtol)))
    return VerifyReport(tol, tuple(checks), rtol)


def verify(spec_or_run: RunTarget | RunResult, inputs: InputsLike | None = None, *,
           sizes: Mapping[str, int] | None = None, past_len: int = 0, seed: int = 0,
           provider: str = "cpu", opset: int = 18, target: str = "portable",
           sparse: str = "auto", block_size: int | None = None, seq_hint: int | None = None,
           passes: str | Sequence[str] | None = None, weights: WeightsLike | None = None,
           tolerance: float | None = None,
           relative_tolerance: float | None = None) -> VerifyReport:
    """Run (arguments as ``execute``; a ``RunResult`` is used as it is) and compare every
    output with the numpy reference, as ``attndsl run --verify`` does. A compiled model is
    checked with the weights it holds, in the layout its recorded passes made. The default
    tolerance is 1e-4 max abs error for float32 models, 2e-2 for float16, plus 1e-5 (float32)
    or 1e-2 (float16) of the output's largest reference magnitude."""
    if isinstance(spec_or_run, RunResult):
        result = spec_or_run
    else:
        result = execute(spec_or_run, inputs, sizes=sizes, past_len=past_len, seed=seed,
                         provider=provider, opset=opset, target=target, sparse=sparse,
                         block_size=block_size, seq_hint=seq_hint, passes=passes,
                         weights=weights)
    return compare(result, tolerance, relative_tolerance)
