"""Hostile and odd input to the front ends: every case answers with a model or a positioned
attndsl error, fast, in both syntaxes (the limits are listed in docs/limits.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attndsl import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError, load_spec, parse_spec
from attndsl.cli import main
from attndsl.errors import LimitError, SpecFileError
from attndsl.frontend import limits

ROOT = Path(__file__).resolve().parents[1]
BOUND_S = 5.0  # generous: each case takes well under a second on an idle machine

YAML = """\
attndsl: 1
name: tiny
dims:
  batch: dynamic
  seq: dynamic
  d: 16
inputs:
  x: [batch, seq, d]
blocks:
  attn:
    query: x
    heads: 2
    mask: causal
outputs:
  y: attn
"""

DSL = """\
attndsl 1
model tiny
dims batch = dynamic, seq = dynamic, d = 16
input x: [batch, seq, d]
block attn = attention(query = x) {
  heads 2
  mask causal
}
output y = attn
"""

DEEP = 100_000
RAISED = 1_000_000  # a size limit the 100,000-deep cases fit in: their depth is what fails
BIG_INT = "9" * 10_000


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    """A spec file's bytes and the error it must give (cls None: it must load)."""

    name: str
    data: bytes
    cls: type | None = None
    message: str = ""
    line: int | None = None
    col: int | None = None
    max_bytes: int | None = None  # ATTNDSL_MAX_SPEC_BYTES for this case (None: the default)


def y(text: str) -> bytes:
    return text.encode()


LAUGHS = "attndsl: 1\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))

CASES = [
    # anchors and aliases: refused where the first one is written
    Case("anchor.yaml", y(edit(YAML, "attndsl: 1", "attndsl: &v 1\nseed: *v")),
         SpecSyntaxError, r"YAML anchors are not supported: '&v'", 1, 10),
    Case("alias.yaml", y(edit(YAML, "name: tiny", "name: *x")), SpecSyntaxError,
         r"YAML aliases are not supported: '\*x'", 2, 7),
    Case("billion-laughs.yaml", y(LAUGHS), SpecSyntaxError, r"anchors are not supported: '&l0'",
         2, 5),
    # nesting: refused at the first level over the limit, before any recursion
    Case("deep-flow.yaml", y("attndsl: 1\nx: " + "[" * DEEP + "]" * DEEP + "\n"), LimitError,
         r"the YAML nests more than 64 levels deep", 2, 67, RAISED),
    Case("deep-block.yaml", y("attndsl: 1\nx:\n" + "".join(
        " " * i + "-\n" for i in range(1, 300))), LimitError, r"nests more than 64 levels", 66,
        65),
    Case("deep-parens.attn", y(edit(DSL, "mask causal", "mask " + "(" * DEEP + "causal"
                                    + ")" * DEEP)),
         LimitError, r"nests more than 64 levels of parentheses and '~'", 7, 72, RAISED),
    Case("deep-parens.yaml", y(edit(YAML, "mask: causal", "mask: " + "(" * DEEP + "causal"
                                    + ")" * DEEP)),
         LimitError, r"nests more than 64 levels of parentheses and '~'", 13, 75, RAISED),
    Case("deep-not.attn", y(edit(DSL, "mask causal", "mask " + "~" * DEEP + "causal")),
         LimitError, r"nests more than 64 levels", 7, 72, RAISED),
    Case("deep-not.yaml", y(edit(YAML, "mask: causal", "mask: " + "~" * DEEP + "causal")),
         LimitError, r"nests more than 64 levels", 13, 75, RAISED),
    # size: refused before reading (the limit is 64 KiB unless raised)
    Case("long-line.yaml", y("# " + "x" * 10_000_000 + "\n" + YAML), LimitError,
         r"the spec is 10,000,\d+ bytes, over the limit of 65,536 bytes"),
    Case("long-line.attn", y(edit(DSL, "mask causal", "mask causal" + " & causal" * 1_200_000)),
         LimitError, r"the spec is 10,800,\d+ bytes, over the limit"),
    Case("huge.yaml", y(YAML + ("# " + "x" * 98 + "\n") * 110_000), LimitError,
         r"over the limit of 65,536 bytes"),
    # numbers
    Case("e309.yaml", y(edit(YAML, "d: 16", "d: 1e309")), SpecError,
         r"dim 'd' must be a positive integer or 'dynamic', got inf$", 6, 3),
    Case("e309.attn", y(edit(DSL, "d = 16", "d = 1e309")), SpecError,
         r"dim 'd' must be a positive integer or 'dynamic', got inf$", 3, 38),
    Case("big-int.yaml", y(edit(YAML, "d: 16", "d: " + BIG_INT)), LimitError,
         r"a number of 10,000 characters is longer than the limit of 100", 6, 6),
    Case("big-int.attn", y(edit(DSL, "d = 16", "d = " + BIG_INT)), LimitError,
         r"a number of 10,000 characters is longer than the limit of 100", 3, 42),
    Case("big-int-arg.attn", y(edit(DSL, "mask causal", f"mask sliding({BIG_INT})")),
         LimitError, r"a number of 10,000 characters", 7, 16),
    Case("power.yaml", y(edit(YAML, "d: 16", "d: 10**100")), SpecError,
         r"got '10\*\*100'$", 6, 3),
    Case("power.attn", y(edit(DSL, "d = 16", "d = 10**100")), SpecSyntaxError,
         r"unexpected '\*' in spec", 3, 44),
    Case("nan.yaml", y(edit(YAML, "d: 16", "d: .nan")), SpecError, r"got nan$", 6, 3),
    Case("inf.yaml", y(edit(YAML, "heads: 2", "heads: 2\n    scale: .inf")), SpecError,
         r"scale must be a positive number", 13, 12),
    Case("nan.attn", y(edit(DSL, "d = 16", "d = nan")), SpecError, r"got 'nan'$", 3, 38),
    Case("inf.attn", y(edit(DSL, "heads 2", "heads inf")), SpecError,
         r"'heads' must be a positive integer, got 'inf'", 6, 9),
    # duplicate keys
    Case("duplicate.yaml", y(edit(YAML, "name: tiny", "name: tiny\nname: other")), SpecError,
         r"duplicate key 'name' in the spec", 3, 1),
    Case("duplicate-setting.yaml", y(edit(YAML, "heads: 2", "heads: 2\n    heads: 4")),
         SpecError, r"duplicate key 'heads' in block 'attn'", 13, 5),
    Case("duplicate-setting.attn", y(edit(DSL, "heads 2", "heads 2\n  heads 4")), SpecError,
         r"duplicate key 'heads' in block 'attn'", 7, 3),
    # encodings and characters
    Case("latin1.yaml", edit(YAML, "tiny", "caf\xe9").encode("latin-1"), SpecFileError,
         r"not UTF-8 text \(invalid continuation byte: byte 0xe9\)", 2, 10),
    Case("latin1.attn", edit(DSL, "tiny", "caf\xe9").encode("latin-1"), SpecFileError,
         r"not UTF-8 text", 2, 10),
    Case("bom.yaml", b"\xef\xbb\xbf" + y(YAML)),
    Case("bom.attn", b"\xef\xbb\xbf" + y(DSL)),
    Case("bom-error.attn", b"\xef\xbb\xbf" + y(edit(DSL, "attndsl 1", "attndsl 2")), SpecError,
         r"unsupported format version 2", 1, 9),
    Case("crlf.yaml", y(YAML.replace("\n", "\r\n"))),
    Case("crlf.attn", y(DSL.replace("\n", "\r\n"))),
    Case("crlf-error.yaml", y(edit(YAML, "mask: causal", "mask: causl").replace("\n", "\r\n")),
         SpecError, r"unknown mask primitive 'causl'", 13, 11),
    Case("crlf-error.attn", y(edit(DSL, "mask causal", "mask causl").replace("\n", "\r\n")),
         SpecError, r"unknown mask primitive 'causl'", 7, 8),
    Case("cr.yaml", y(YAML.replace("\n", "\r"))),  # old Mac line endings
    Case("cr.attn", y(DSL.replace("\n", "\r"))),
    Case("cr-error.attn", y(edit(DSL, "mask causal", "mask causl").replace("\n", "\r")),
         SpecError, r"unknown mask primitive 'causl'", 7, 8),
    Case("tab.yaml", y(edit(YAML, "  d: 16", "\td: 16")), SpecSyntaxError,
         r"invalid YAML: found character '\\t'", 6, 1),
    Case("tab.attn", y(DSL.replace("  ", "\t"))),
    Case("nul.yaml", y(edit(YAML, "tiny", "ti\x00ny")), SpecSyntaxError,
         r"the file contains a NUL byte", 2, 9),
    Case("nul.attn", y(edit(DSL, "tiny", "ti\x00ny")), SpecSyntaxError,
         r"the file contains a NUL byte", 2, 9),
    Case("binary.yaml", bytes(range(256)) * 4, SpecFileError, r"not UTF-8 text", 2, 118),
    # nothing in the file
    Case("empty.yaml", b"", SpecSyntaxError, r"the spec is empty", 1, 1),
    Case("empty.attn", b"", SpecSyntaxError, r"unexpected end of input in spec", 1, 1),
    Case("comments.yaml", b"# a\n# b\n", SpecSyntaxError, r"the spec is empty", 1, 1),
    Case("comments.attn", b"# a\n# b\n", SpecSyntaxError, r"unexpected end of input in spec",
         2, 4),
]


def _load(path: Path):
    start = time.perf_counter()
    try:
        return load_spec(path), time.perf_counter() - start
    except AttnDSLError as err:
        return err, time.perf_counter() - start


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_spec_file(case: Case, tmp_path: Path, monkeypatch) -> None:
    if case.max_bytes is not None:
        monkeypatch.setenv(limits.SPEC_BYTES_ENV, str(case.max_bytes))
    path = tmp_path / case.name
    path.write_bytes(case.data)
    result, took = _load(path)
    assert took < BOUND_S, f"{case.name} took {took:.2f} s"
    if case.cls is None:
        assert not isinstance(result, AttnDSLError), str(result)
        plain = case.data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        plain = plain.replace(b"\r", b"\n")
        plain = plain.replace(b"\t", b"  ")
        assert result == parse_spec(plain.decode(), case.name)  # as if written plainly
        return
    err = result
    if isinstance(err, SpecErrors) and case.cls is not SpecErrors:
        err = next(e for e in err.errors if re.search(case.message, e.message))
    assert type(err) is case.cls, str(err)
    assert re.search(case.message, err.message), err.message
    shown = str(err)
    assert len(shown) < 2000, "a long line is shown cut, not whole"
    if case.line is None:
        assert err.span is None
        return
    assert (err.span.line, err.span.col) == (case.line, case.col), shown
    assert shown.startswith(f"{path}:{case.line}:{case.col}: error: "), shown
    if case.data.strip():
        assert "^" in shown  # the caret under the offending text


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecFileError, match=r"cannot read '.*nope.yaml': no such file$"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SpecFileError, match=r"cannot read '.*dir.yaml': it is a directory$"):
        load_spec(tmp_path / "dir.yaml")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_file_is_read_no_further_than_the_limit() -> None:
    start = time.perf_counter()
    with pytest.raises(LimitError, match="the spec is more than 65,536 bytes"):
        load_spec("/dev/zero")
    assert time.perf_counter() - start < BOUND_S


def test_size_limit_is_raised_and_lowered_by_the_environment(tmp_path: Path,
                                                              monkeypatch) -> None:
    path = tmp_path / "padded.attn"
    path.write_text(DSL + "# padding\n" * 8000, encoding="utf-8")  # 80 KB of comments
    with pytest.raises(LimitError, match="set ATTNDSL_MAX_SPEC_BYTES"):
        load_spec(path)
    monkeypatch.setenv(limits.SPEC_BYTES_ENV, "200000")
    assert load_spec(path) == parse_spec(DSL, "padded.attn")
    monkeypatch.setenv(limits.SPEC_BYTES_ENV, "100")
    with pytest.raises(LimitError, match="over the limit of 100 bytes"):
        load_spec(path)
    monkeypatch.setenv(limits.SPEC_BYTES_ENV, "lots")
    with pytest.raises(LimitError, match="ATTNDSL_MAX_SPEC_BYTES must be a positive number"):
        load_spec(path)


def test_many_errors_are_cut_short() -> None:
    text = YAML + "name: again\n" * 2000
    with pytest.raises(SpecErrors) as info:
        parse_spec(text, "many.yaml")
    assert len(info.value.errors) == 2000
    shown = str(info.value)
    assert shown.endswith("\n... and 1,950 more errors")
    assert shown.count(": error: ") == 50


def test_collection_where_a_value_belongs_is_shown_as_written() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(edit(YAML, "heads: 2", "heads: [[[1]]]"), "list.yaml")
    assert info.value.message == "'heads' must be a positive integer, got [[[1]]]"
    with pytest.raises(SpecError) as info:
        parse_spec(edit(YAML, "heads: 2", "heads: [" + "1, " * 5000 + "1]"), "list.yaml")
    assert info.value.message.endswith("got [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ...")




def test_thousands_of_unknown_keys_compute_only_the_shown_hints(monkeypatch) -> None:
    """A 64 KiB spec of 7,000 unknown keys: the fuzzy match behind "did you mean" runs for the
    50 errors written out, not for all 7,000 (it took 1.2 s of a 2.5 s parse)."""
    import attndsl.errors as errors_module

    calls = []
    real = errors_module.did_you_mean
    monkeypatch.setattr(errors_module, "did_you_mean",
                        lambda w, c: calls.append(w) or real(w, c))
    text = edit(YAML, "heads: 2", "heads: 2\n" + "".join(f"    k{i}: 1\n" for i in range(7000)))
    with pytest.raises(SpecErrors) as info:
        parse_spec(text, "keys.yaml")
    assert len(info.value.errors) == 7000 and not calls
    shown = str(info.value)
    assert "unknown key 'k0' in block" in shown and len(calls) == SpecErrors.shown

def test_bad_v_head_dim_in_core_mode_is_an_error_not_a_crash() -> None:
    # found by tools/fuzz.py: core mode multiplied kv_heads by the refused v_head_dim (None)
    text = edit(YAML, "heads: 2", "heads: 2\n    project: false\n    v_head_dim: .nan")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "core.yaml")
    assert "'v_head_dim' must be a positive integer, got nan" in str(info.value)

# ---------------------------------------------------------------- at the nesting limit

def _nested(levels: list[str]) -> tuple[str, int]:
    """A mask expression wrapping ``causal`` in ``levels`` (innermost first) and its depth by
    the rule of docs/limits.md: open parentheses plus pending '~', calls not counted."""
    expr, depth = "causal", 0
    for level in levels:
        if level == "not":
            expr, depth = f"~{expr}", depth + 1
        elif level == "paren":
            expr, depth = f"({expr})", depth + 1
        elif level == "and":
            expr, depth = f"(sliding(3) & {expr})", depth + 1
        elif level == "or":
            expr, depth = f"({expr} | sliding(2))", depth + 1
        else:  # "notparen"
            expr, depth = f"~({expr} & sliding(5))", depth + 2
    return expr, depth


def test_the_pipeline_runs_at_the_nesting_limit(tmp_path: Path) -> None:
    """Every stage (parser, builder, mask engines, lowering, reference) handles the deepest
    expression the front end lets through, in both syntaxes."""
    expr, depth = _nested(["or", "notparen", "and", "not"] * 12 + ["paren"] * 4)
    assert depth == limits.MAX_NESTING
    for name, text in (("deep.yaml", edit(YAML, "mask: causal", f"mask: '{expr}'")),
                       ("deep.attn", edit(DSL, "mask causal", f"mask {expr}"))):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert main(["run", "--verify", "--sparse", "block", "--block-size", "4",
                     "--sizes", "seq=9,batch=1", str(path)]) == 0
        over = text.replace(expr, f"~{expr}")
        with pytest.raises(LimitError):
            parse_spec(over, name)


_LEVELS = st.lists(st.sampled_from(["not", "paren", "and", "or", "notparen"]), max_size=90)


@given(_LEVELS, st.sampled_from(["yaml", "attn"]))
def test_expression_nesting_is_refused_exactly_over_the_limit(levels, syntax) -> None:
    expr, depth = _nested(levels)
    text = (edit(YAML, "mask: causal", f"mask: '{expr}'") if syntax == "yaml"
            else edit(DSL, "mask causal", f"mask {expr}"))
    if depth > limits.MAX_NESTING:
        with pytest.raises(LimitError, match="nests more than 64 levels"):
            parse_spec(text, f"s.{syntax}")
    else:
        parse_spec(text, f"s.{syntax}")


@st.composite
def _yaml_collections(draw) -> tuple[str, int]:
    """A YAML value of randomly nested flow lists and mappings, and its nesting depth."""
    kinds = draw(st.lists(st.sampled_from(["[", "{"]), min_size=1, max_size=90))
    text = "1"
    for kind in reversed(kinds):
        text = f"[{text}]" if kind == "[" else f"{{k: {text}}}"
    return text, len(kinds)


@given(_yaml_collections())
def test_yaml_nesting_is_refused_exactly_over_the_limit(value: tuple[str, int]) -> None:
    text, depth = value
    spec = f"{YAML}extra: {text}\n"
    if depth + 1 > limits.MAX_NESTING:  # the document's mapping is the first level
        with pytest.raises(LimitError, match="the YAML nests more than 64 levels"):
            parse_spec(spec, "s.yaml")
    else:
        with pytest.raises(SpecError, match="unknown top-level key 'extra'"):
            parse_spec(spec, "s.yaml")


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=12),
       st.integers(0, 11))
def test_any_anchor_or_alias_is_refused_where_first_written(items, at) -> None:
    """Random anchors and aliases (as in "billion laughs"): the first one is named."""
    lines = []
    for i, (is_alias, target) in enumerate(items):
        if i == at % len(items) or is_alias:
            marker = f"*a{target}" if is_alias else f"&a{i} [x, y]"
        else:
            marker = "[x, y]"
        lines.append(f"k{i}: {marker}")
    text = "attndsl: 1\n" + "\n".join(lines) + "\n"
    first = min(i for i in (text.find("&"), text.find("*")) if i >= 0)
    with pytest.raises(SpecSyntaxError, match="YAML (anchors|aliases) are not supported") \
            as info:
        parse_spec(text, "a.yaml")
    line = text.count("\n", 0, first) + 1
    assert (info.value.span.line, info.value.span.col) == (
        line, first - text.rfind("\n", 0, first))


# ---------------------------------------------------------------- the command line

def _cli(*args: object, max_bytes: int | None = None) -> tuple[subprocess.CompletedProcess,
                                                                float]:
    env = {k: v for k, v in os.environ.items() if k not in ("ATTNDSL_DEBUG",
                                                             limits.SPEC_BYTES_ENV)}
    if max_bytes is not None:
        env[limits.SPEC_BYTES_ENV] = str(max_bytes)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "attndsl", *map(str, args)],
                       capture_output=True, text=True, env=env, timeout=60)
    return r, time.perf_counter() - start


@pytest.mark.parametrize("name", ["billion-laughs.yaml", "deep-parens.attn", "huge.yaml",
                                  "latin1.attn"])
def test_cli_answers_hostile_specs_with_exit_2(name: str, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    path = tmp_path / name
    path.write_bytes(case.data)
    command = ["check", path] if name.endswith(".yaml") else [
        "compile", path, "-o", tmp_path / "m.onnx"]
    r, took = _cli(*command, max_bytes=case.max_bytes)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    where = f"{path}:{case.line}:{case.col}: error: " if case.line else "error: cannot read "
    assert r.stderr.startswith(where), r.stderr
    assert re.search(case.message, r.stderr)
    assert took < 20, f"{took:.1f} s"  # interpreter start included; about 1 s when idle
    assert not (tmp_path / "m.onnx").exists()
