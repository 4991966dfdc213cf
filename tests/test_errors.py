"""Errors: class, message, line and column for bad specs in both syntaxes, and bad weights."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import error_of, located_error

from attndsl import AttnDSLError, SpecError, SpecErrors, SpecSyntaxError, load_spec, parse_spec
from attndsl.errors import WeightsError
from attndsl.weights import load_weights, seeded_weights

YAML = """\
attndsl: 1
dims:
  batch: dynamic
  seq: dynamic
  d: 16
inputs:
  x: [batch, seq, d]
  lengths: {shape: [batch], dtype: int64}
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
dims batch = dynamic, seq = dynamic, d = 16
input x: [batch, seq, d]
input lengths: int64[batch]
block attn = attention(query = x) {
  heads 2
  mask causal
}
output y = attn
"""


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def check(err: AttnDSLError, cls: type, message: str, line: int, col: int) -> None:
    assert type(err) is cls, str(err)
    assert re.search(message, err.message), err.message
    assert (err.span.line, err.span.col) == (line, col), str(err)


# (id, text, class, message pattern, line, column)
YAML_CASES = [
    # YAML syntax
    ("yaml-tab", edit(YAML, "  x: [", "\tx: ["), SpecSyntaxError,
     r"invalid YAML: found character '\\t'", 7, 1),
    ("yaml-unclosed", edit(YAML, "seq, d]", "seq, d"), SpecSyntaxError,
     r"invalid YAML: expected ',' or ']'", 8, 10),
    ("yaml-indent", edit(YAML, "    heads: 2", "   heads: 2"), SpecSyntaxError,
     r"invalid YAML", 12, 4),
    ("yaml-empty", "# nothing\n", SpecSyntaxError, r"the spec is empty", 1, 1),
    ("yaml-not-mapping", "- a\n- b\n", SpecError, r"the spec must be a mapping", 1, 1),
    # expressions inside YAML strings point into the file
    ("expr-plain", edit(YAML, "mask: causal", "mask: causal & & sliding(4)"), SpecSyntaxError,
     r"unexpected '&' in mask expression", 13, 20),
    ("expr-double-quoted", edit(YAML, "mask: causal", 'mask: "causal | sliding(4"'),
     SpecSyntaxError, r"unexpected end of input in mask expression", 13, 29),
    ("expr-single-quoted", edit(YAML, "mask: causal", "mask: 'causal sliding(4)'"),
     SpecSyntaxError, r"unexpected 'sliding' in mask expression", 13, 19),
    ("expr-bad-char", edit(YAML, "mask: causal", "mask: causal ^ prefix(2)"),
     SpecSyntaxError, r"unexpected '\^' in mask expression", 13, 18),
    ("score-flow", edit(YAML, "mask: causal", "score: [alibi, softcap(]"), SpecSyntaxError,
     r"unexpected end of input in score modifiers", 13, 27),
    ("score-block-item", edit(YAML, "mask: causal", "score:\n      - alibi\n      - 'alibi alibi'"),
     SpecSyntaxError, r"unexpected 'alibi' in score modifiers", 15, 16),
    ("expr-folded-line", edit(YAML, "mask: causal", "mask: causal &\n      sliding(4) & &"),
     SpecSyntaxError, r"unexpected '&' in mask expression", 14, 20),
    ("expr-quoted-folded", edit(YAML, "mask: causal", "mask: 'causal &\n      slidng(4)'"),
     SpecError, r"unknown mask primitive 'slidng'", 14, 7),
    ("score-flow-multiline", edit(YAML, "mask: causal", "score: [alibi,  # note\n"
                                  "            softcapp(30.0)]"), SpecError,
     r"unknown score modifier 'softcapp'", 14, 13),
    ("expr-hash", edit(YAML, "mask: causal", "mask: causal#sliding(4)"), SpecSyntaxError,
     r"unexpected '#' in mask expression", 13, 17),
    ("mask-empty", edit(YAML, "mask: causal", "mask:"), SpecSyntaxError,
     r"unexpected end of input in mask expression", 13, 10),
    ("mask-not-string", edit(YAML, "mask: causal", "mask: [causal]"), SpecError,
     r"mask must be a string", 13, 11),
    # unknown names, with did-you-mean
    ("top-key", edit(YAML, "dims:", "dim:"), SpecErrors, r"unknown top-level key 'dim'",
     2, 1),
    ("block-key", edit(YAML, "heads: 2", "heads: 2\n    kv_head: 1"), SpecError,
     r"unknown key 'kv_head' in block 'attn'", 13, 5),
    ("rope-key", edit(YAML, "heads: 2", "heads: 2\n    rope: {theta: 10.0, dims: 4}"),
     SpecError, r"unknown rope key 'dims'", 13, 25),
    ("input-key", edit(YAML, "dtype: int64}", "dtpye: int64}"), SpecError,
     r"unknown key 'dtpye' in input 'lengths'", 8, 29),
    ("mask-primitive", edit(YAML, "mask: causal", "mask: causal & slidng(4)"), SpecError,
     r"unknown mask primitive 'slidng'", 13, 20),
    ("score-modifier", edit(YAML, "mask: causal", "score: [alibi, softcapp(3.0)]"),
     SpecError, r"unknown score modifier 'softcapp'", 13, 20),
    ("stream", edit(YAML, "query: x", "query: xx"), SpecError,
     r"unknown stream 'xx' in block 'attn'", 11, 12),
    ("dim", edit(YAML, "[batch, seq, d]", "[batch, sequ, d]"), SpecError,
     r"unknown dim 'sequ' in the shape of 'x'", 7, 14),
    ("input", edit(YAML, "mask: causal", "mask: padding(length)"), SpecError,
     r"unknown input 'length' in padding/prefix", 13, 11),
    ("output-block", edit(YAML, "y: attn", "y: atn"), SpecError,
     r"unknown block 'atn' in output 'y'", 15, 3),
    ("output-attr", edit(YAML, "y: attn", "y: attn.weight"), SpecError,
     r"unknown block attribute 'weight'", 15, 3),
    # stream graph
    ("cycle", edit(edit(YAML, "query: x", "query: b2"), "outputs:",
                   "  b2:\n    query: attn\n    heads: 2\noutputs:"), SpecError,
     r"cyclic stream reference: attn -> b2 -> attn", 10, 3),
    ("self-cycle", edit(YAML, "query: x", "query: attn"), SpecError,
     r"cyclic stream reference: attn -> attn", 10, 3),
    ("not-a-stream", edit(YAML, "query: x", "query: lengths"), SpecError,
     r"input 'lengths' is not a stream", 11, 12),
    # sizes
    ("kv-heads", edit(YAML, "heads: 2", "heads: 4\n    kv_heads: 3"), SpecError,
     r"kv_heads 3 does not divide heads 4", 13, 15),
    ("head-width", edit(YAML, "heads: 2", "heads: 3"), SpecError,
     r"query width 16 is not divisible by heads 3", 12, 12),
    ("heads-zero", edit(YAML, "heads: 2", "heads: 0"), SpecError,
     r"'heads' must be a positive integer, got 0", 12, 12),
    ("core-width", edit(edit(YAML, "  lengths:", "  k: [batch, seq, 8]\n  lengths:"),
                        "query: x", "query: x\n    key_value: k\n    project: false"),
     SpecError, r"width mismatch: stream 'k' has width 8, core mode needs kv_heads \* "
     r"head_dim = 16", 11, 3),
    ("rope-odd", edit(YAML, "heads: 2", "heads: 2\n    rope: {dim: 3}"), SpecError,
     r"rope dim must be an even integer in 2..8, got 3", 13, 17),
    ("scale-inf", edit(YAML, "heads: 2", "heads: 2\n    scale: .inf"), SpecError,
     r"scale must be a positive number", 13, 12),
    # dims
    ("dim-zero", edit(YAML, "d: 16", "d: 0"), SpecError,
     r"dim 'd' must be a positive integer or 'dynamic', got 0$", 5, 3),
    ("dim-negative", edit(YAML, "d: 16", "d: -4"), SpecError, r"got -4$", 5, 3),
    ("dim-float", edit(YAML, "d: 16", "d: 16.0"), SpecError, r"got 16.0$", 5, 3),
    ("dim-typo", edit(YAML, "seq: dynamic", "seq: dynamc"), SpecError, r"got 'dynamc'$", 4, 3),
    ("shape-zero", edit(YAML, "[batch, seq, d]", "[batch, 0, d]"), SpecError,
     r"invalid dim 0 in the shape of 'x'", 7, 14),
    ("name", edit(YAML, "  x: [", "  x-1: ["), SpecErrors, r"invalid input name 'x-1'", 7, 3),
    # duplicates
    ("dup-block-key", edit(YAML, "heads: 2", "heads: 2\n    heads: 4"), SpecError,
     r"duplicate key 'heads' in block 'attn'", 13, 5),
    ("dup-block", edit(YAML, "outputs:", "  attn:\n    query: x\n    heads: 2\noutputs:"),
     SpecError, r"duplicate key 'attn' in blocks", 14, 3),
    ("dup-top", edit(YAML, "attndsl: 1", "attndsl: 1\nseed: 1\nseed: 2"), SpecError,
     r"duplicate key 'seed' in the spec", 3, 1),
    ("output-is-input", edit(YAML, "y: attn", "x: attn"), SpecError,
     r"output 'x' has the name of an input", 15, 3),
    # primitive arguments
    ("heads-range", edit(YAML, "mask: causal", "mask: heads(0..2)"), SpecError,
     r"heads\(2\) is out of range: the block has 2 heads", 13, 11),
    ("heads-empty", edit(YAML, "mask: causal", "mask: heads(3..1)"), SpecError,
     r"empty range 3..1", 13, 17),
    ("arg-count", edit(YAML, "mask: causal", "mask: sliding(4, 5)"), SpecError,
     r"sliding takes 1 argument\(s\), got 2", 13, 11),
    ("arg-missing", edit(YAML, "mask: causal", "mask: window(3)"), SpecError,
     r"window needs 'r'", 13, 11),
    ("arg-type-name", edit(YAML, "mask: causal", "mask: sliding(lengths)"), SpecError,
     r"sliding\(\.\.\.\): 'w' must be a number", 13, 19),
    ("arg-type-float", edit(YAML, "mask: causal", "mask: chunk(2.5)"), SpecError,
     r"'c' must be an integer, got 2.5", 13, 17),
    ("arg-minimum", edit(YAML, "mask: causal", "mask: sliding(0)"), SpecError,
     r"'w' must be >= 1, got 0", 13, 19),
    ("arg-input-type", edit(YAML, "mask: causal", "mask: padding(3)"), SpecError,
     r"'len' must name an input", 13, 19),
    ("arg-input-dtype", edit(YAML, "mask: causal", "mask: padding(x)"), SpecError,
     r"padding/prefix needs a int64 or int32 input; 'x' is float32", 13, 11),
    ("kwarg-unknown", edit(YAML, "mask: causal", "mask: random(2, blocks=4)"), SpecError,
     r"random has no parameter 'blocks'", 13, 21),
    ("kwarg-twice", edit(YAML, "mask: causal", "score: [softcap(2.0, c=3.0)]"), SpecError,
     r"softcap: 'c' given twice", 13, 26),
    ("softcap-inf", edit(YAML, "mask: causal", "score: [softcap(1e999)]"), SpecError,
     r"'c' must be positive and finite", 13, 21),
    ("bool-arg", edit(YAML, "mask: causal", "score: [relative_bias(bidirectional=1)]"),
     SpecError, r"'bidirectional' must be true or false", 13, 41),
    ("range-outside-heads", edit(YAML, "mask: causal", "mask: sliding(1..3)"), SpecError,
     r"a range a..b is only allowed in heads", 13, 19),
    ("range-too-long", edit(YAML, "mask: causal", "mask: heads(0..100000000000)"),
     SpecError, r"range 0..100000000000 is too long", 13, 17),
    ("random-dynamic", edit(YAML, "mask: causal", "mask: random(2, block=4)"), SpecError,
     r"random\(\.\.\.\) needs static query and key lengths", 13, 11),
    ("document-cross", edit(edit(edit(
        YAML, "  lengths:", "  ids: {shape: [batch, seq], dtype: int64}\n  mem: [batch, seq, 16]"
        "\n  lengths:"), "query: x", "query: x\n    key_value: mem"), "mask: causal",
        "mask: document(ids)"), SpecError, r"document\(ids\) needs self-attention", 16, 11),
    ("score-is-mask", edit(YAML, "mask: causal", "score: [causal]"), SpecError,
     r"unknown score modifier 'causal'", 13, 13),
    # top level
    ("version", edit(YAML, "attndsl: 1", "attndsl: 2"), SpecError,
     r"unsupported format version 2", 1, 10),
    ("version-missing", edit(YAML, "attndsl: 1\n", ""), SpecError,
     r"missing 'attndsl: 1'", 1, 1),
    ("dtype", edit(YAML, "attndsl: 1", "attndsl: 1\ndtype: float61"), SpecError,
     r"unsupported dtype 'float61'", 2, 8),
    ("seed", edit(YAML, "attndsl: 1", "attndsl: 1\nseed: -1"), SpecError,
     r"seed must be a non-negative integer", 2, 7),
    ("no-outputs", edit(YAML, "outputs:\n  y: attn\n", ""), SpecError,
     r"the spec has no outputs", 1, 1),
]

DSL_CASES = [
    # Lark failures: position, found text, expectation
    ("keyword-typo", edit(DSL, "attndsl 1\n", "attndsl 1\nmodle foo\n"), SpecSyntaxError,
     r"unexpected 'modle' in spec", 2, 1),
    ("unterminated-string", edit(DSL, "attndsl 1\n", 'attndsl 1\nweights "w.npz\n'),
     SpecSyntaxError, r"""unexpected '"' in spec""", 2, 9),
    ("missing-brace", edit(DSL, "}\n", ""), SpecSyntaxError, r"unexpected 'output' in spec", 8, 1),
    ("bad-char", edit(DSL, "mask causal", "mask causal $ x"), SpecSyntaxError,
     r"unexpected '\$' in spec", 7, 15),
    ("missing-equals", edit(DSL, "query = x", "query x"), SpecSyntaxError,
     r"unexpected 'x' in spec", 5, 30),
    ("incomplete-mask", edit(DSL, "mask causal", "mask causal &"), SpecSyntaxError,
     r"unexpected end of line in spec", 7, 16),
    ("no-header", edit(DSL, "attndsl 1\n", ""), SpecSyntaxError, r"unexpected 'dims' in spec",
     1, 1),
    ("header-no-version", edit(DSL, "attndsl 1", "attndsl"), SpecSyntaxError,
     r"unexpected end of line in spec", 1, 8),
    ("empty", "", SpecSyntaxError, r"unexpected end of input in spec", 1, 1),
    # semantic errors carry DSL positions
    ("block-key", edit(DSL, "heads 2", "heads 2, hedas 3"), SpecError,
     r"unknown key 'hedas' in block 'attn'", 6, 12),
    ("rope-key", edit(DSL, "mask causal", "rope thetaa = 3.0"), SpecError,
     r"unknown rope key 'thetaa'", 7, 8),
    ("rope-flag", edit(DSL, "mask causal", "rope off"), SpecError,
     r"rope must be a mapping", 7, 8),
    ("dup-top", edit(DSL, "attndsl 1\n", "attndsl 1\nseed 1\nseed 2\n"), SpecError,
     r"duplicate 'seed'", 3, 1),
    ("dup-input", edit(DSL, "input lengths", "input x"), SpecError, r"duplicate input 'x'", 4, 7),
    ("dup-output", DSL + "output y = attn\n", SpecError, r"duplicate output 'y'", 10, 8),
    ("dup-block", DSL + "block attn = attention(query = x) {heads 4}\n", SpecError,
     r"duplicate block 'attn'", 10, 7),
    ("dup-dim", edit(DSL, "d = 16", "d = 16, seq = 4"), SpecError, r"duplicate dim 'seq'", 2, 46),
    ("dim-typo", edit(DSL, "seq = dynamic", "seq = dynamc"), SpecError,
     r"dim 'seq' must be a positive integer or 'dynamic', got 'dynamc'", 2, 23),
    ("mask-primitive", edit(DSL, "mask causal", "mask casual"), SpecError,
     r"unknown mask primitive 'casual'", 7, 8),
    ("stream", edit(DSL, "query = x", "query = y"), SpecError, r"unknown stream 'y'", 5, 32),
    ("block-kind", edit(DSL, "attention(", "attentoin("), SpecError,
     r"unknown block kind 'attentoin'", 5, 7),
]


@pytest.mark.parametrize("text,cls,message,line,col",
                         [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_yaml_errors(text: str, cls: type, message: str, line: int, col: int) -> None:
    err = error_of(text, "spec.yaml")
    if isinstance(err, SpecErrors) and cls is not SpecErrors:
        pytest.fail(f"expected one error, got:\n{err}")
    if cls is SpecErrors:  # the case's error comes with follow-on errors: find it
        assert isinstance(err, SpecErrors), str(err)
        err = next(e for e in err.errors if re.search(message, e.message))
        cls = type(err)
    check(err, cls, message, line, col)


@pytest.mark.parametrize("text,cls,message,line,col",
                         [c[1:] for c in DSL_CASES], ids=[c[0] for c in DSL_CASES])
def test_dsl_errors(text: str, cls: type, message: str, line: int, col: int) -> None:
    check(error_of(text, "spec.attn"), cls, message, line, col)


@pytest.mark.parametrize("text,path,hint", [
    (edit(YAML, "dims:", "dim:"), "s.yaml", "did you mean 'dims'?"),
    (edit(YAML, "heads: 2", "heads: 2\n    kv_head: 1"), "s.yaml", "did you mean 'kv_heads'?"),
    (edit(YAML, "heads: 2", "heads: 2\n    rope: {theta: 10.0, dims: 4}"), "s.yaml",
     "did you mean 'dim'?"),
    (edit(YAML, "mask: causal", "mask: slidng(4)"), "s.yaml", "did you mean 'sliding'?"),
    (edit(YAML, "mask: causal", "score: [softcapp(3.0)]"), "s.yaml", "did you mean 'softcap'?"),
    (edit(YAML, "mask: causal", "score: [causal]"), "s.yaml", "'causal' is a mask"),
    (edit(YAML, "query: x", "query: xx"), "s.yaml", "did you mean 'x'?"),
    (edit(YAML, "[batch, seq, d]", "[batch, sequ, d]"), "s.yaml", "did you mean 'seq'?"),
    (edit(YAML, "mask: causal", "mask: padding(length)"), "s.yaml", "did you mean 'lengths'?"),
    (edit(YAML, "y: attn", "y: atn"), "s.yaml", "did you mean 'attn'?"),
    (edit(YAML, "seq: dynamic", "seq: dynamc"), "s.yaml", "did you mean 'dynamic'?"),
    (edit(YAML, "mask: causal", "mask: random(2, blocks=4)"), "s.yaml", "did you mean 'block'?"),
    (edit(DSL, "attndsl 1\n", "attndsl 1\nmodle foo\n"), "s.attn", "did you mean 'model'?"),
    (edit(DSL, "heads 2", "hedas 2"), "s.attn", "did you mean 'heads'?"),
    (edit(DSL, "mask causal", "mask causal &"), "s.attn", "expected '(', '~' or a name"),
    (edit(DSL, "query = x", "query x"), "s.attn", "expected '='"),
    (edit(YAML, "mask: causal", "mask: 'causal sliding(4)'"), "s.yaml",
     "expected '&', '(', '|' or end of input"),
    (edit(YAML, "mask: causal", "mask: heads(1..)"), "s.yaml", "expected a number"),
    (edit(YAML, "mask: causal", "mask: sliding(4, 5)"), "s.yaml", "usage: sliding(w)"),
])
def test_hints(text: str, path: str, hint: str) -> None:
    err = error_of(text, path)
    assert any(hint in (e.hint or "") for e in getattr(err, "errors", [err])), str(err)


def test_error_text_has_location_source_line_and_caret() -> None:
    err = error_of(edit(YAML, "mask: causal", "mask: causal & slidng(4)"), "dir/spec.yaml")
    assert str(err) == located_error(
        "dir/spec.yaml", 13, 20, "unknown mask primitive 'slidng'; did you mean 'sliding'?",
        "    mask: causal & slidng(4)", len("slidng(4)"))
    err = error_of(edit(DSL, "mask causal", "mask causal &"), "spec.attn")
    lines = str(err).splitlines()
    assert lines[0].startswith("spec.attn:7:16: error: unexpected end of line in spec;")
    assert lines[1:] == ["    mask causal &", "                 ^"]


def test_multiple_errors_are_reported_together_sorted() -> None:
    text = edit(edit(edit(YAML, "mask: causal", "mask: slidng(3)"), "query: x", "query: xx"),
                "d: 16", "d: 16\n  e: dynamc")
    text = edit(text, "heads: 2", "heads: 2\n    kv_head: 1")
    err = error_of(text, "s.yaml")
    assert isinstance(err, SpecErrors)
    got = [(e.span.line, e.span.col, type(e), e.message.split(";")[0]) for e in err.errors]
    assert got == [
        (6, 3, SpecError, "dim 'e' must be a positive integer or 'dynamic', got 'dynamc'"),
        (12, 12, SpecError, "unknown stream 'xx' in block 'attn'"),
        (14, 5, SpecError, "unknown key 'kv_head' in block 'attn'"),
        (15, 11, SpecError, "unknown mask primitive 'slidng'"),
    ]
    assert err.message == "4 errors"
    chunks = str(err).split("\n")
    assert chunks[0].startswith("s.yaml:6:3: error: dim 'e'")
    assert [c for c in chunks if c.startswith("s.yaml:")][1:] == [
        f"s.yaml:{ln}:{col}: error: {msg}{'; ' + e.hint if e.hint else ''}"
        for (ln, col, _, msg), e in zip(got[1:], err.errors[1:], strict=True)]


def test_syntax_errors_in_several_yaml_strings_are_collected() -> None:
    text = edit(YAML, "mask: causal", "mask: causal &\n    score: [alibi alibi]")
    err = error_of(text, "s.yaml")
    assert isinstance(err, SpecErrors)
    assert [(type(e), e.span.line, e.span.col) for e in err.errors] == [
        (SpecSyntaxError, 13, 18), (SpecSyntaxError, 14, 19)]


def test_errors_of_a_spec_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.attn"
    path.write_text(edit(DSL, "heads 2", "heads 3"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:6:9: error: query width 16 is not divisible")
    with pytest.raises(AttnDSLError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(AttnDSLError, match="not UTF-8"):
        load_spec(tmp_path / "latin1.yaml")


# ---------------------------------------------------------------- weights files


@pytest.fixture
def model():
    return parse_spec(YAML, "spec.yaml")


def _save(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file
        save_file(arrays, str(path))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_files_load(tmp_path: Path, model, suffix: str) -> None:
    arrays = seeded_weights(model)
    got = load_weights(model, _save(tmp_path / f"w{suffix}", arrays))
    assert sorted(got) == sorted(arrays)
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weights_mismatch_names_every_array(tmp_path: Path, model, suffix: str) -> None:
    arrays = dict(seeded_weights(model))
    del arrays["attn.q_proj.weight"]
    arrays["attn.k_proj.weight"] = np.zeros((3, 16), np.float32)
    arrays["attn.extra"] = np.zeros(2, np.float32)
    path = _save(tmp_path / f"w{suffix}", arrays)
    with pytest.raises(WeightsError) as info:
        load_weights(model, path)
    msg = str(info.value)
    assert f"weights file '{path}' does not match the spec" in msg
    assert "missing array 'attn.q_proj.weight' [16, 16]" in msg
    assert "array 'attn.k_proj.weight' has shape [3, 16], expected [16, 16]" in msg
    assert "unexpected array 'attn.extra'" in msg


def test_weights_non_float_array(tmp_path: Path, model) -> None:
    arrays = dict(seeded_weights(model))
    arrays["attn.o_proj.weight"] = np.zeros((16, 16), np.int64)
    with pytest.raises(WeightsError, match="'attn.o_proj.weight' has dtype int64"):
        load_weights(model, _save(tmp_path / "w.npz", arrays))


@pytest.mark.parametrize("name,content,message", [
    ("missing.npz", None, "cannot read weights file .*: no such file"),
    ("junk.npz", b"not a zip file", "cannot read weights file"),
    ("junk.safetensors", b"\x01\x00", "cannot read weights file"),
    ("w.bin", b"\x00", "unsupported weights file"),
])
def test_unreadable_weights_files(tmp_path: Path, model, name: str, content: bytes | None,
                                  message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_weights(model, path)


def test_spec_weights_path_is_relative_to_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(edit(YAML, "attndsl: 1", "attndsl: 1\nweights: w.npz"), encoding="utf-8")
    model = load_spec(spec)
    assert Path(model.weights_file) == tmp_path / "w.npz"
    with pytest.raises(WeightsError, match="no such file"):
        load_weights(model)
    _save(tmp_path / "w.npz", seeded_weights(model))
    assert sorted(load_weights(model)) == sorted(model.weight_shapes())


@pytest.mark.parametrize("ids_dim,cache,message", [
    ("seq", "true", r"with a cache, document ids cover the past and the new keys"),
    ("other", "false", r"document ids must be \[batch, k_len\]"),
])
def test_document_ids_length_is_checked(ids_dim: str, cache: str, message: str) -> None:
    text = f"""attndsl: 1
dims: {{batch: dynamic, seq: dynamic, other: dynamic}}
inputs:
  x: [batch, seq, 8]
  ids: {{shape: [batch, {ids_dim}], dtype: int64}}
blocks:
  attn: {{query: x, heads: 2, mask: "causal & document(ids)", cache: {cache}}}
outputs: {{y: attn}}
"""
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(text, "x.yaml")
    assert (info.value.span.line, info.value.span.col) == (7, 46)  # at document(ids)


def test_document_in_core_mode_queries_may_not_outnumber_keys() -> None:
    text = """attndsl: 1
dims: {batch: dynamic, sq: 6, sk: 4}
inputs:
  q: [batch, sq, 8]
  k: [batch, sk, 8]
  ids: {shape: [batch, sk], dtype: int64}
blocks:
  attn: {query: q, key: k, value: k, project: false, heads: 2, mask: "document(ids)"}
outputs: {y: attn}
"""
    with pytest.raises(SpecError, match=r"'q' has 6 queries but 'k' only 4 keys"):
        parse_spec(text, "x.yaml")
