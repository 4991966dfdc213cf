"""Golden text of lowered graphs: tests/golden/graphs/<case>.txt is ``graph_text`` of a shipped
spec compiled with the case's options, so that a change in a lowering shows up as a diff.

After an intended change, rewrite the files with

    ATTNDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_graphs.py

and review ``git diff tests/golden/graphs``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from attndsl.api import load_spec
from attndsl.lower.compile import CompileOptions, compile_with_explanations
from attndsl.lower.text import graph_text

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = ROOT / "tests" / "golden" / "graphs"
UPDATE = os.environ.get("ATTNDSL_UPDATE_GOLDEN") == "1"

# case: (spec, compile options, the lowering each block must get)
CASES: dict[str, tuple[str, dict, list[str]]] = {
    "causal": ("examples/gpt2_causal.yaml", {}, ["portable/dense"]),
    "sliding_band": ("examples/mistral_block.yaml", {}, ["portable/block-sparse band"]),
    "bigbird_tiles": ("tests/golden/bigbird_sparse.yaml", {"sparse": "block", "block_size": 4},
                      ["portable/block-sparse tiles"]),
    "gqa_cache": ("tests/golden/mistral_gqa_cache.yaml", {"sparse": "dense"},
                  ["portable/dense"]),
    "ort_gqa": ("examples/mistral_block.yaml", {"target": "ort", "sparse": "dense"},
                ["com.microsoft.GroupQueryAttention"]),
}


def lowered_text(case: str) -> str:
    """``graph_text`` of the case's model; asserts each block got the expected lowering, so
    that a golden file never silently documents another strategy."""
    path, options, lowerings = CASES[case]
    proto, explain = compile_with_explanations(load_spec(ROOT / path), None,
                                               CompileOptions(**options))
    assert [e.lowering for e in explain] == lowerings, explain
    return graph_text(proto)


@pytest.mark.parametrize("case", CASES)
def test_graph_matches_golden_text(case: str) -> None:
    got = lowered_text(case)
    golden = GRAPHS / f"{case}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    assert golden.exists(), f"no {golden.relative_to(ROOT)}; run with ATTNDSL_UPDATE_GOLDEN=1"
    want = golden.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True),
            fromfile=f"{golden.relative_to(ROOT)} (golden)", tofile=f"{case} (compiled now)"))
        pytest.fail(f"the lowered graph of {case!r} differs from its golden text; if the change "
                    f"is intended, rerun with ATTNDSL_UPDATE_GOLDEN=1\n{diff}", pytrace=False)


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GRAPHS.glob("*.txt")) == sorted(CASES)


def test_graph_text_lists_initializers_without_their_data() -> None:
    proto, _ = compile_with_explanations(load_spec(ROOT / CASES["causal"][0]))
    text = graph_text(proto)
    weight = next(t for t in proto.graph.initializer if t.name == "attn.qkv_proj.weight")
    assert "  float32[576,192] attn.qkv_proj.weight\n" in text  # name, type and shape only
    assert len(text) < 10_000 < len(weight.raw_data)
    assert "attndsl.spec" not in text and "attndsl.version" not in text
    small = [t for t in proto.graph.initializer if len(t.dims) == 0]
    assert small and all(f" {t.name} = {{" in text for t in small)  # scalar constants: values
