"""docs/language.md stays true: its examples parse, each YAML example and the DSL example
after it are the same model, the error sample is what the compiler prints, and every key,
primitive and modifier the code knows is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import error_of
from test_errors import YAML, edit

from attndsl import parse_spec
from attndsl.features.registry import BLOCK_FEATURES, MASKS, SCORES
from attndsl.frontend import parse_source
from attndsl.frontend.ast import TOP_KEYS
from attndsl.ir.build import BLOCK_KEYS
from attndsl.source import Source

DOC = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text("utf-8")
FENCE = re.compile(r"^```(yaml|attn|text)\n(.*?)^```$", re.M | re.S)
EXAMPLES = [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC) if m.group(1) != "text"]
PATHS = {"yaml": "example.yaml", "attn": "example.attn"}


def test_the_doc_has_examples_in_both_syntaxes() -> None:
    kinds = [k for k, _ in EXAMPLES]
    assert kinds.count("yaml") >= 4 and kinds.count("attn") >= 4


@pytest.mark.parametrize("kind,text", EXAMPLES, ids=[f"{i}-{k}" for i, (k, _) in
                                                     enumerate(EXAMPLES)])
def test_examples_parse(kind: str, text: str) -> None:
    parse_spec(text, PATHS[kind])


def test_each_yaml_example_and_the_dsl_one_after_it_agree() -> None:
    pairs = [(a[1], b[1]) for a, b in zip(EXAMPLES, EXAMPLES[1:], strict=False)
             if (a[0], b[0]) == ("yaml", "attn")]
    assert len(pairs) >= 4
    for yaml_text, dsl_text in pairs:
        assert parse_spec(yaml_text, PATHS["yaml"]) == parse_spec(dsl_text, PATHS["attn"])
        yaml_ast = parse_source(Source(yaml_text, PATHS["yaml"]))
        assert yaml_ast == parse_source(Source(dsl_text, PATHS["attn"]))


def test_the_error_sample_is_what_the_compiler_prints() -> None:
    sample = next(m.group(2) for m in FENCE.finditer(DOC) if m.group(2).startswith("spec.yaml"))
    err = error_of(edit(YAML, "mask: causal", "mask: causal & slidng(4)"), "spec.yaml")
    assert sample.rstrip("\n") == str(err)


# the options of every block feature (rope's theta, dim, interleaved; qk_norm's kind, ...)
OPTIONS = sorted({o.name for f in BLOCK_FEATURES for o in f.options})


@pytest.mark.parametrize("name", [*TOP_KEYS, *BLOCK_KEYS, *OPTIONS, *MASKS, *SCORES])
def test_every_name_is_documented(name: str) -> None:
    assert re.search(rf"`{name}\b", DOC), name
