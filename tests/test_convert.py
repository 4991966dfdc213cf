"""Syntax conversion: YAML <-> .attn round trips give equal ASTs and IRs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from feature_specs import PAIRS
from hypothesis import given
from strategies import spec_yaml

from attndsl import AttnDSLError, SpecError, load_spec, parse_spec
from attndsl.convert import convert_file, convert_text
from attndsl.frontend import parse_source
from attndsl.source import Source

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted(p for folder in ("specs", "examples") for p in (ROOT / folder).glob("*")
                    if p.suffix in (".yaml", ".yml", ".attn"))
SYNTAX = {".yaml": "yaml", ".yml": "yaml", ".attn": "dsl"}
SUFFIX = {"yaml": ".yaml", "dsl": ".attn"}
OTHER = {"yaml": "dsl", "dsl": "yaml"}


def round_trip(text: str, path: str) -> None:
    """source -> other syntax -> source syntax: equal AST and IR at each step; the second
    conversion of the same syntax gives the same text (the writers are canonical)."""
    syntax = SYNTAX[Path(path).suffix]
    stem = str(Path(path).with_suffix(""))
    original = parse_source(Source(text, path))
    model = parse_spec(text, path)
    there = convert_text(text, path, OTHER[syntax])
    there_path = stem + SUFFIX[OTHER[syntax]]
    assert parse_source(Source(there, there_path)) == original
    assert parse_spec(there, there_path) == model
    back = convert_text(there, there_path, syntax)
    back_path = stem + SUFFIX[syntax]
    assert parse_source(Source(back, back_path)) == original
    assert parse_spec(back, back_path) == model
    assert convert_text(back, back_path, OTHER[syntax]) == there
    assert convert_text(back, back_path, syntax) == back


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_spec_files_round_trip(path: Path) -> None:
    round_trip(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("syntax", ["yaml", "dsl"])
def test_feature_specs_round_trip(name: str, syntax: str) -> None:
    text = PAIRS[name][0 if syntax == "yaml" else 1]
    round_trip(text, f"{name}{SUFFIX[syntax]}")


@given(spec_yaml())
def test_random_specs_round_trip(text: str) -> None:
    round_trip(text, "random_spec.yaml")


def test_yaml_writer_quotes_what_yaml_would_misread() -> None:
    text = """\
attndsl: 1
name: 'gpt-2: block #1'
weights: "w dir/#w.npz"
dims: {"null": 2, seq: 4, "yes": 8}
inputs:
  "on": ["null", seq, "yes"]
  "off": {shape: ["null"], dtype: int64}
blocks:
  "true":
    query: "on"
    heads: 2
    mask: ~causal | (prefix(off) & causal)
    score: ["softcap(2.0)"]
outputs:
  "y": "true"
  "n": "true.weights"
"""
    model = parse_spec(text, "q.yaml")
    assert [i.name for i in model.inputs] == ["on", "off"]
    assert model.name == "gpt-2: block #1"
    round_trip(text, "q.yaml")
    dsl = convert_text(text, "q.yaml", "dsl")
    assert 'model "gpt-2: block #1"' in dsl
    assert "mask ~causal | prefix(off) & causal" in dsl


def test_dsl_only_forms_round_trip() -> None:
    text = PAIRS["minimal"][1].replace("{}", "{\n  rope false\n  score\n  scale 1e-2\n}")
    round_trip(text, "m.attn")
    yaml_text = convert_text(text, "m.attn", "yaml")
    assert "rope: false" in yaml_text and "score: []" in yaml_text
    assert "scale: 0.01" in yaml_text
    assert parse_spec(yaml_text, "m.yaml").block("attn").scale == 0.01


@pytest.mark.parametrize("value", [1e-05, 1e20, 2.5e-300, 123456789.125, 0.1])
def test_floats_survive_both_syntaxes(value: float) -> None:
    text = PAIRS["minimal"][0].replace("heads: 2}", f"heads: 2, scale: {value!r}}}")
    assert parse_spec(text, "m.yaml").block("attn").scale == value
    round_trip(text, "m.yaml")


def test_convert_keeps_what_the_user_wrote() -> None:
    text = PAIRS["minimal"][0]
    dsl = convert_text(text, "m.yaml", "dsl")
    for default in ("kv_heads", "head_dim", "mask", "dtype", "seed", "model", "cache"):
        assert default not in dsl
    assert "heads(0..3)" in convert_text(
        text.replace("heads: 2}", "heads: 4, mask: heads(0..3)}"), "m.yaml", "dsl")


def test_convert_text_picks_the_syntax_from_content() -> None:
    dsl = convert_text(PAIRS["core"][0], "<string>", "dsl")
    assert dsl.startswith("attndsl 1\n")
    assert convert_text(dsl, "<string>", "yaml") == convert_text(PAIRS["core"][0], "c.yaml",
                                                                  "yaml")


def test_convert_text_rejects_invalid_specs_and_targets() -> None:
    bad = PAIRS["minimal"][0].replace("heads: 2", "heads: 3")
    with pytest.raises(SpecError, match="not divisible by heads 3"):
        convert_text(bad, "m.yaml", "dsl")
    with pytest.raises(ValueError, match="'yaml' or 'dsl'"):
        convert_text(PAIRS["minimal"][0], "m.yaml", "json")


@pytest.mark.parametrize("src_suffix,dst_suffix", [
    (".yaml", ".attn"), (".attn", ".yaml"), (".attn", ".yml"), (".yaml", ".yaml")])
def test_convert_file(tmp_path: Path, src_suffix: str, dst_suffix: str) -> None:
    src = tmp_path / f"spec{src_suffix}"
    src.write_text(PAIRS["all_keys"][0 if src_suffix == ".yaml" else 1], encoding="utf-8")
    dst = tmp_path / "out" / f"spec{dst_suffix}"
    dst.parent.mkdir()
    convert_file(src, dst)
    assert load_spec(dst).blocks == load_spec(src).blocks
    assert sorted(p.name for p in dst.parent.iterdir()) == [dst.name]  # no temp file left
    # the relative weights path still names the same file from the new folder
    same = Path(load_spec(src).weights_file).resolve()
    assert Path(load_spec(dst).weights_file).resolve() == same


def test_convert_file_replaces_and_keeps_mode(tmp_path: Path) -> None:
    src = tmp_path / "a.yaml"
    src.write_text(PAIRS["core"][0], encoding="utf-8")
    dst = tmp_path / "a.attn"
    dst.write_text("old", encoding="utf-8")
    os.chmod(dst, 0o640)
    convert_file(str(src), str(dst))
    assert dst.read_text(encoding="utf-8") == convert_text(PAIRS["core"][0], "a.yaml", "dsl")
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640
    assert load_spec(dst) == load_spec(src)


def test_convert_file_errors_leave_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "a.yaml"
    src.write_text(PAIRS["minimal"][0].replace("query: x", "query: z"), encoding="utf-8")
    with pytest.raises(SpecError, match="unknown stream 'z'"):
        convert_file(src, tmp_path / "a.attn")
    with pytest.raises(AttnDSLError, match="cannot tell the syntax"):
        convert_file(src, tmp_path / "a.json")
    with pytest.raises(AttnDSLError, match="no such file"):
        convert_file(tmp_path / "missing.yaml", tmp_path / "b.attn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]


def test_dsl_keywords_as_names_round_trip() -> None:
    text = """\
attndsl: 1
dims: {dims: dynamic, seed: dynamic, model: 16}
inputs:
  input: [dims, seed, model]
  weights: {shape: [dims], dtype: int64}
  mask: {shape: [dims, seed], dtype: int64}
blocks:
  block:
    query: input
    heads: 2
    mask: padding(weights) & document(mask) & heads(0)
  rope:
    query: block
    heads: 2
    score: [alibi]
outputs:
  output: rope
  attndsl: block.weights
"""
    round_trip(text, "keywords.yaml")
    dsl = convert_text(text, "keywords.yaml", "dsl")
    assert "block rope = attention(query = block) {" in dsl
    assert "output attndsl = block.weights" in dsl
