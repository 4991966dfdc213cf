"""ONNX's own backend node tests for ``Attention`` (opsets 23-25), translated to attndsl specs.

Each case the spec language (docs/language.md) can express is compiled (portable target), run
in ONNX Runtime and compared with onnx's expected outputs as onnx's backend runner compares
them; the numpy reference is held to the same data. A case the language cannot express is
skipped with the reason. ``python -m tests.onnx_suite`` prints the same results as a table.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx_suite import (
    Translation,
    Unexpressible,
    attention_cases,
    compare,
    run_compiled_case,
    run_reference_case,
    translate,
)

from attndsl.api import parse_spec
from attndsl.convert import convert_text

CASES = {c.name: c for c in attention_cases()}
TRANSLATIONS = {name: translate(c) for name, c in CASES.items()}
EXPRESSIBLE = [n for n, t in TRANSLATIONS.items() if isinstance(t, Translation)]

# Measured with onnx 1.23.2: 93 Attention node tests, 68 expressible. Raise these when the
# language (or the translation) learns more; a drop is a regression.
MIN_CASES = 93
MIN_EXPRESSIBLE = 68


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_matches_onnx(name: str) -> None:
    tr = TRANSLATIONS[name]
    if isinstance(tr, Unexpressible):
        pytest.skip(f"unexpressible: {tr.reason}")
    case = CASES[name]
    compare(case, run_compiled_case(case, tr))


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_compiled_with_dynamic_dims_matches_onnx(name: str) -> None:
    """The same specs with symbolic batch / sequence dims."""
    case = CASES[name]
    tr = translate(case, dynamic=True)
    assert isinstance(tr, Translation) and "dynamic" in tr.spec
    compare(case, run_compiled_case(case, tr))


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_reference_matches_onnx(name: str) -> None:
    case = CASES[name]
    compare(case, run_reference_case(case, TRANSLATIONS[name]), exact_dtype=False)


@pytest.mark.skipif(tuple(int(p) for p in onnx.__version__.split(".")[:2]) < (1, 23),
                    reason="the counts were measured with onnx 1.23's generators")
def test_expressible_count_does_not_drop() -> None:
    assert len(CASES) >= MIN_CASES, sorted(CASES)
    assert len(EXPRESSIBLE) >= MIN_EXPRESSIBLE, {
        n: t.reason for n, t in TRANSLATIONS.items() if isinstance(t, Unexpressible)}


def test_every_attribute_and_input_kind_is_exercised() -> None:
    """The expressible set covers each feature the translation maps (a guard against a
    translation that silently turns into a subset)."""
    specs = "\n".join(TRANSLATIONS[n].spec for n in EXPRESSIBLE)
    for needle in ("causal", "mask(attn_mask)", "bias(attn_mask)", "softcap(",
                   "padding(nonpad_kv_seqlen)", "window(", "cache: true", "scale:",
                   "dtype: float16", ".weights", "kv_heads: 1"):
        assert needle in specs, needle
    assert any(c.inputs["Q"].ndim == 4 for c in (CASES[n] for n in EXPRESSIBLE))
    assert any(c.inputs["Q"].ndim == 3 for c in (CASES[n] for n in EXPRESSIBLE))


def test_translation_only_changes_layouts() -> None:
    """Feeds hold the case's values: Q/K/V are the case tensors (4-D ones split back from
    the [B, S, H*D] stream here), and a padded mask keeps the case's cells."""
    for name in EXPRESSIBLE:
        case, tr = CASES[name], TRANSLATIONS[name]
        for role in ("Q", "K", "V"):
            x, fed = case.inputs[role], tr.feeds[role]
            if x.ndim == 4:
                b, h, s, d = x.shape
                fed = fed.reshape(b, s, h, d).transpose(0, 2, 1, 3)
            np.testing.assert_array_equal(fed, x, err_msg=f"{name}: {role}")
        if "attn_mask" in case.inputs:
            m = case.inputs["attn_mask"]
            np.testing.assert_array_equal(tr.feeds["attn_mask"][..., : m.shape[-1]], m)


@pytest.mark.parametrize("name", EXPRESSIBLE)
def test_spec_reads_the_same_in_dsl(name: str) -> None:
    """Each translated spec says the same in ``.attn`` (the suite holds for both syntaxes)."""
    yaml_text = TRANSLATIONS[name].spec
    dsl_text = convert_text(yaml_text, f"{name}.yaml", to="dsl")
    assert parse_spec(dsl_text, f"{name}.attn") == parse_spec(yaml_text, f"{name}.yaml")
