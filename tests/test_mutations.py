"""Mutated spec text never raises anything but AttnDSLError (both syntaxes).

Valid specs are cut into tokens; Hypothesis deletes, duplicates, swaps, replaces and inserts
tokens and splices in random characters. The front end and the IR builder must answer every
result with a spec or an AttnDSLError (a message with a position), never a crash; and a
mutant that is still valid converts to the other syntax and back to an equal IR.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from feature_specs import PAIRS
from hypothesis import example, given
from hypothesis import strategies as st

from attndsl import AttnDSLError, parse_spec
from attndsl.convert import convert_text
from attndsl.frontend import parse_source
from attndsl.source import Source

_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|.", re.S)
_GOLDEN = sorted((Path(__file__).resolve().parent / "golden").glob("*.yaml"))

SEEDS: list[tuple[str, str]] = []
for _name, (_yaml, _dsl) in sorted(PAIRS.items()):
    SEEDS += [(_yaml, f"{_name}.yaml"), (_dsl, f"{_name}.attn")]
for _path in _GOLDEN:
    _text = _path.read_text(encoding="utf-8")
    SEEDS += [(_text, _path.name), (convert_text(_text, _path.name, "dsl"),
                                     _path.with_suffix(".attn").name)]

_WORDS = ["0", "1", "2", "3", "-1", "0.0", "2.5", "1e999", "65", "4096", "true", "false",
          "dynamic", "x", "attn", "local", "heads", "causal", "random", "document", "bias",
          "float16", "int64", "bool", "weights"]
_JUNK = st.one_of(
    st.sampled_from(["\t", "\n", " ", ":", "-", "[", "]", "{", "}", "(", ")", ",", "=", "&",
                     "|", "~", "..", ".", '"', "'", "#", "*", "!", "&a", "? ", "\\\n", "0",
                     "-1", "1e999", "9" * 30, "null", "true", "dynamic", "heads", "mask",
                     "\x00", "\ufeff", "\u00e9", "\r\n"]),
    st.text(max_size=3),
)


@st.composite
def mutated(draw) -> tuple[str, str]:
    text, path = draw(st.sampled_from(SEEDS))
    tokens = _TOKEN.findall(text)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "junk", "replace"]))
        if op == "replace":  # a word or number for another: keeps the text parseable
            tokens[i] = draw(st.sampled_from([t for t in tokens if t.strip()] + _WORDS))
        elif op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(tokens)))
        else:
            tokens.insert(i, draw(_JUNK))
    return "".join(tokens), path


def parses_or_fails_cleanly(text: str, path: str) -> None:
    try:
        model = parse_spec(text, path)
    except AttnDSLError as err:
        str(err)  # the message renders too
        return
    spec = parse_source(Source(text, path))  # nothing the user wrote is silently dropped
    assert sorted(b.name for b in spec.blocks) == sorted(b.name for b in model.blocks)
    assert [o.name for o in spec.outputs] == [o.name for o in model.outputs]
    other, suffix = ("dsl", ".attn") if path.endswith(".yaml") else ("yaml", ".yaml")
    other_path = str(Path(path).with_suffix(suffix))
    converted = convert_text(text, path, other)
    assert parse_spec(converted, other_path) == model


@pytest.mark.parametrize("text,path", SEEDS, ids=[p for _, p in SEEDS])
def test_seed_specs_are_valid(text: str, path: str) -> None:
    parse_spec(text, path)


@given(mutated())
@example(("attndsl: 1\ndims: {d: " + "9" * 5000 + "}\n", "big.yaml"))
@example(("attndsl 1\ndims d = " + "9" * 5000 + "\n", "big.attn"))
@example(("attndsl: 1\nblocks: {a: {query: x, heads: 2, mask: 'heads(0..99999999999)'}}\n",
          "range.yaml"))
@example(("attndsl: 1\n? [a]\n: 1\n", "key.yaml"))
@example(("attndsl: 1\nblocks: {a: [1]}\ninputs: {x: 3}\noutputs: {y: [a]}\n", "shapes.yaml"))
@example(("attndsl: 1\ndims: {d: [1]}\ninputs: {x: {shape: [d, {a: 1}], dtype: [1]}}\n",
          "nested.yaml"))
@example(("attndsl: &a 1\nname: *a\n", "alias.yaml"))
@example(("attndsl: 1\nname: !!binary aGVsbG8=\nseed: 2001-12-14\n", "tags.yaml"))
def test_mutated_specs_raise_only_attndsl_errors(case: tuple[str, str]) -> None:
    parses_or_fails_cleanly(*case)
