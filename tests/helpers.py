"""Helpers shared by the test modules.

- ``one_block_yaml`` / ``one_block``: the one-block spec (block ``attn`` over ``x [batch, seq,
  d]``) that most lowering tests vary one setting of;
- ``run_both``, ``output_error`` and ``check_against_reference``: compile, run in ONNX Runtime
  and compare output by output with the float64 reference interpreter;
- ``ErrorReport``: the largest error per feature, collected while a module runs and printed at
  its end (``pytest -s``);
- ``error_of`` and ``located_error``: the text of an error report (``file:line:col: error:
  message``, the source line and a caret under the span);
- ``digests_per_hash_seed``: SHA-256 of compiled models, computed in fresh Python processes
  with given ``PYTHONHASHSEED`` values (determinism across processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from attndsl.api import parse_spec
from attndsl.errors import AttnDSLError
from attndsl.ir.nodes import Model
from attndsl.lower.compile import CompileOptions, compile_model
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

# ------------------------------------------------------------------ one-block specs


def one_block_yaml(block: str, *, name: str = "t", dtype: str = "float32", seed: int = 0,
                   seq: str | int = "dynamic", d: int = 32, dims: str = "", inputs: str = "",
                   blocks: str = "", outputs: str = "y: attn") -> str:
    """The YAML text of a spec whose block ``attn`` reads ``x: [batch, seq, d]``.

    ``block`` holds the block's settings after ``query: x`` (4-space indented lines); ``dims``,
    ``inputs`` and ``blocks`` are extra 2-space indented lines of those sections (more dims,
    more inputs, more blocks after ``attn``); ``outputs`` is the text after ``outputs:`` on the
    next line (further outputs on lines of their own, 2-space indented).
    """
    return f"""\
attndsl: 1
name: {name}
dtype: {dtype}
seed: {seed}
dims:
  batch: dynamic
  seq: {seq}
  d: {d}
{dims}
inputs:
  x: [batch, seq, d]
{inputs}
blocks:
  attn:
    query: x
{block}
{blocks}
outputs:
  {outputs}
"""


def one_block(block: str, *, path: str = "t.yaml", **options) -> Model:
    """``one_block_yaml(block, **options)`` parsed (as the file ``path``)."""
    return parse_spec(one_block_yaml(block, **options), path)


# ------------------------------------------------------------------ compile, run, compare


def run_both(model: Model, feed: Mapping[str, np.ndarray], *,
             options: CompileOptions | None = None, opset: int = 18,
             weights: Mapping[str, np.ndarray] | None = None, session=None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(ONNX Runtime's outputs, the reference interpreter's outputs) for ``feed``.

    The model is compiled (``compile_model(model, weights, opset, options)``) unless a
    ``session`` of it is given.
    """
    weights = load_weights(model) if weights is None else weights
    if session is None:
        session = make_session(compile_model(model, weights, opset, options))
    return run_session(session, dict(feed)), run_reference(model, weights, dict(feed))


def output_error(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *,
                 dtype: str | None = None, where: object = "") -> float:
    """The largest absolute difference between ``got`` and the float64 reference ``want``.

    Asserts first that ``got`` has the same outputs in the same order, each with the shape of
    the reference, ``dtype`` (when given) and no NaN; ``where`` goes into the messages.
    """
    assert list(got) == list(want), where
    err = 0.0
    for name, ref in want.items():
        out = np.asarray(got[name])
        if dtype is not None:
            assert out.dtype == np.dtype(dtype), (name, where)
        assert out.shape == ref.shape, (name, where)
        assert not np.isnan(out).any(), (name, where)
        err = max(err, float(np.abs(out.astype(np.float64) - ref).max(initial=0.0)))
    return err


def check_against_reference(model: Model, feed: Mapping[str, np.ndarray], atol: float, *,
                            options: CompileOptions | None = None, session=None,
                            weights: Mapping[str, np.ndarray] | None = None,
                            where: object = "") -> float:
    """Compile ``model`` (or use ``session``), run ``feed`` in ONNX Runtime and assert that
    every output has the model's dtype and lies within ``atol`` of the reference; returns the
    largest error."""
    got, want = run_both(model, feed, options=options, weights=weights, session=session)
    err = output_error(got, want, dtype=model.dtype, where=where)
    assert err <= atol, f"{where}{': ' if where else ''}max abs error {err:.3g} > {atol:g}"
    return err


# ------------------------------------------------------------------ error reports


class ErrorReport:
    """The largest error seen per key while a test module runs, printed when it ends.

    In a module: ``ERRORS = ErrorReport("max abs error, ...:", width=44)`` and
    ``_report = ERRORS.fixture()`` (an autouse, module-scoped fixture).
    """

    def __init__(self, title: str, width: int = 44):
        self.title = title
        self.width = width
        self.errors: dict[str, float] = {}

    def record(self, key: str, err: float) -> None:
        """Keep ``err`` for ``key`` if it is the largest so far."""
        self.errors[key] = max(self.errors.get(key, 0.0), err)

    def lines(self) -> list[str]:
        """The printed report: the title, then one line per key in sorted order."""
        return [self.title] + [f"  {name:{self.width}s} {err:.2e}"
                               for name, err in sorted(self.errors.items())]

    def fixture(self) -> Callable[[], Iterator[None]]:
        """An autouse, module-scoped fixture that prints the report after the module."""

        @pytest.fixture(scope="module", autouse=True)
        def _report() -> Iterator[None]:
            yield
            print("\n" + "\n".join(self.lines()))

        return _report


def assert_round_trips(yaml_text: str) -> None:
    """A YAML spec survives YAML -> .attn -> YAML with an equal syntax tree, and both syntaxes
    give the same IR."""
    from attndsl.frontend import parse_source
    from attndsl.frontend.writers import write_dsl, write_yaml
    from attndsl.source import Source

    spec = parse_source(Source(yaml_text, "t.yaml"))
    dsl = write_dsl(spec)
    back = parse_source(Source(dsl, "t.attn"))
    assert back == spec
    assert parse_source(Source(write_yaml(back), "t.yaml")) == spec
    assert parse_spec(dsl, "t.attn") == parse_spec(yaml_text, "t.yaml")


def error_of(text: str, path: str) -> AttnDSLError:
    """The error that parsing ``text`` (as the file ``path``) raises; fails if none."""
    with pytest.raises(AttnDSLError) as info:
        parse_spec(text, path)
    return info.value


def located_error(path: object, line: int, col: int, message: str, source: str,
                  width: int = 1) -> str:
    """The text of an error at ``path:line:col``: the message line, then the source line and a
    caret under the span (``^`` and ``width - 1`` tildes), both indented by two spaces."""
    caret = " " * (col - 1) + "^" + "~" * (width - 1)
    return f"{path}:{line}:{col}: error: {message}\n  {source}\n  {caret}"


# ------------------------------------------------------------------ determinism across processes

ROOT = Path(__file__).resolve().parents[1]

# Runs in each child: argv[1] is a JSON list of [spec path, options label, CompileOptions
# keywords]; prints {"path [label]": sha256 of the model bytes} as JSON. An error counts as a
# fingerprint too: it must be the same error in every process.
_DIGESTS = r"""
import hashlib, json, sys
from attndsl.api import load_spec
from attndsl.lower.compile import CompileOptions, compile_model, model_bytes

out, models = {}, {}
for path, label, options in json.loads(sys.argv[1]):
    if "passes" in options:
        options["passes"] = tuple(options["passes"])
    key = f"{path} [{label}]"
    try:
        model = models.get(path) or models.setdefault(path, load_spec(path))
        out[key] = hashlib.sha256(model_bytes(compile_model(
            model, options=CompileOptions(**options)))).hexdigest()
    except Exception as err:
        out[key] = f"error: {type(err).__name__}: {err}"
print(json.dumps(out, sort_keys=True))
"""


def digests_per_hash_seed(specs: Sequence[str | Path], options: Mapping[str, dict],
                          hash_seeds: Sequence[str]) -> list[dict[str, str]]:
    """Per hash seed, the SHA-256 of every spec compiled under every named option set, each
    seed in its own fresh Python process (all run in parallel, importing this checkout)."""
    jobs = json.dumps([[str(p), label, dict(o)] for p in specs for label, o in options.items()])
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, "-c", _DIGESTS, jobs], cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in hash_seeds]
    runs = []
    for seed, proc in zip(hash_seeds, procs, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"PYTHONHASHSEED={seed}:\n{err}"
        runs.append(json.loads(out))
    return runs
