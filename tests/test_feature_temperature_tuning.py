"""``temperature_tuning`` (``attndsl/features/blocks/temperature_tuning.py``): Llama 4's query
temperature ``1 + attn_scale * log(floor((pos + 1) / floor_scale) + 1)``.

- The reference against transformers' Llama4TextAttention on a NoPE layer in float64 (the
  ``Float64`` mode of ``test_feature_kernels.py``): max abs error <= 1e-12, without a cache
  (a small floor_scale) and with a cache of 8190 past tokens and the default floor_scale
  8192, so the factor steps from 1 inside the new tokens (cache_position, not position ids).
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, lengths 1 and 7,
  batch 2, GQA, past 8190, dense and block-sparse, the cache, cross-attention, core mode, the
  ort target (portable, explained); fold-scale stays exact.
- Both syntaxes, the round trip, ``attndsl check``, the error messages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ErrorReport,
    assert_round_trips,
    check_against_reference,
    error_of,
    one_block,
    one_block_yaml,
)

from attndsl import parse_spec
from attndsl.features import kernels
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.passes.base import Program
from attndsl.passes.fold_scale import FoldScale
from attndsl.reference import run_reference
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.summary import format_summary, summarize
from attndsl.weights import seeded_weights

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("temperature_tuning max abs error:", width=52)
_report = ERRORS.fixture()

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _additive, _llama4, round_to_float32  # noqa: E402

SPEC = "    heads: 4\n    kv_heads: 2\n    head_dim: 16\n    mask: causal\n"


def _nope_layer(seed: int, attn_scale: float, floor_scale: int):
    """Llama 4's layer 1 (NoPE: no RoPE, no QK-norm), parameters rounded to float32."""
    cfg, m, _ = _llama4(1, seed, attn_scale=attn_scale, floor_scale=floor_scale,
                        attn_temperature_tuning=True)
    assert not m.use_rope and m.attn_temperature_tuning
    return cfg, m, round_to_float32(m, "attn.")


def _record(name: str, got: np.ndarray, want: np.ndarray) -> None:
    err = float(np.max(np.abs(got - want)))
    ERRORS.record(name, err)
    assert err <= 1e-12, err


@pytest.mark.parametrize("s", (1, 7, 33))
def test_llama4_nope_layer(s):
    _, m, w = _nope_layer(1, 0.3, 4)
    x = np.random.default_rng(s).standard_normal((2, s, 64))
    allowed = np.tril(np.ones((s, s), bool))[None, None].repeat(2, 0)
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=None,
                 attention_mask=_additive(allowed),
                 cache_position=torch.arange(s))[0].numpy()
    model = one_block(SPEC + "    temperature_tuning: {attn_scale: 0.3, floor_scale: 4}\n",
                      d=64)
    _record("vs transformers Llama 4 NoPE", run_reference(model, w, {"x": x})["y"], want)


@pytest.mark.parametrize("s", (1, 5))
def test_llama4_nope_layer_past_8190_default_floor_scale(s):
    """8190 cached tokens, then s new ones at positions 8190..: floor((pos + 1) / 8192)
    steps from 0 to 1 at position 8191, so the factor is not 1 there."""
    from transformers.cache_utils import DynamicCache

    cfg, m, w = _nope_layer(2, 0.1, 8192)
    past = 8190
    rng = np.random.default_rng(s)
    x = rng.standard_normal((2, s, 64))
    pk, pv = rng.standard_normal((2, 2, 2, past, 16))
    cache = DynamicCache(config=cfg)
    with torch.no_grad():
        cache.update(torch.from_numpy(pk), torch.from_numpy(pv), 1)
    allowed = np.tril(np.ones((s, past + s), bool), k=past)[None, None].repeat(2, 0)
    with torch.no_grad(), Float64():
        want = m(hidden_states=torch.from_numpy(x), position_embeddings=None,
                 attention_mask=_additive(allowed), past_key_values=cache,
                 cache_position=torch.arange(past, past + s))[0].numpy()
    factors = kernels.llama4_attn_scales(np.arange(past, past + s), 0.1, 8192)
    assert factors[0] == 1.0 and (s == 1 or factors[-1] > 1.0)
    model = one_block(SPEC + "    temperature_tuning: true\n    cache: true\n", d=64)
    got = run_reference(model, w, {"x": x, "attn.past_key": pk, "attn.past_value": pv})["y"]
    _record("vs transformers Llama 4 NoPE, past 8190", got, want)


# ------------------------------------------------------------------ ONNX Runtime vs reference

TOL = {"float32": 1e-5, "float16": 2e-2}


def _model(dtype: str = "float32", extra: str = "", mask: str = "causal",
           option: str = "{attn_scale: 0.5, floor_scale: 2}", **kw):
    return one_block(f"    heads: 4\n    kv_heads: 2\n    mask: {mask}\n"
                     f"    temperature_tuning: {option}\n{extra}", dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(dtype, sparse):
    model = _model(dtype, mask="causal & sliding(8)")
    options = CompileOptions(sparse=sparse, block_size=4)
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], options=options,
                                      where=f"{dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype}", err)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_past_8190_default_floor_scale(dtype, sparse):
    model = _model(dtype, "    cache: true\n", mask="causal & sliding(8)", option="true")
    feed = random_inputs(model, {"batch": 2, "seq": 4}, seed=1, past_len=8190)
    err = check_against_reference(model, feed, TOL[dtype],
                                  options=CompileOptions(sparse=sparse, block_size=4),
                                  where=f"past 8190 {dtype} {sparse}")
    ERRORS.record(f"ORT {dtype} past 8190", err)


def test_cache_prefill_then_steps_equals_full_run():
    model = _model(extra="    cache: true\n", option="{attn_scale: 0.5, floor_scale: 3}")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    errors = max_errors(model, decode_loop(model, compile_model(model), inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors


def test_cross_attention_queries_at_i():
    model = one_block("    key_value: m\n    heads: 4\n    kv_heads: 2\n"
                      "    temperature_tuning: {attn_scale: 0.5, floor_scale: 2}\n",
                      dims="  mem: dynamic", inputs="  m: [batch, mem, d]")
    feed = random_inputs(model, {"batch": 2, "seq": 5, "mem": 7}, seed=1)
    ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_core_mode_and_with_rope():
    core = one_block("    project: false\n    heads: 4\n    mask: causal\n"
                     "    temperature_tuning: {floor_scale: 2}\n")
    feed = random_inputs(core, {"batch": 2, "seq": 6}, seed=2)
    ERRORS.record("ORT float32 core mode", check_against_reference(core, feed, 1e-5))
    rope = _model(extra="    rope: true\n    cache: true\n")
    feed = random_inputs(rope, {"batch": 2, "seq": 3}, seed=2, past_len=5)
    ERRORS.record("ORT float32 with rope", check_against_reference(rope, feed, 1e-5))


def test_the_factor_scales_the_queries():
    """In core mode the streams are q, k and v: the block equals one without the feature
    whose query stream is multiplied by the factor (keys and values untouched)."""
    model = one_block("    project: false\n    heads: 2\n    mask: causal\n"
                      "    temperature_tuning: {attn_scale: 0.7, floor_scale: 2}\n", d=16)
    x = np.random.default_rng(0).standard_normal((1, 6, 16))
    factor = 1 + 0.7 * np.log(np.floor((np.arange(6) + 1) / 2) + 1)
    plain = parse_spec(one_block_yaml("    project: false\n    key_value: x\n    heads: 2\n"
                                      "    mask: causal\n", d=16, inputs="  q: [batch, seq, d]"
                                      ).replace("query: x", "query: q"), "w.yaml")
    want = run_reference(plain, {}, {"x": x, "q": x * factor[None, :, None]})["y"]
    assert np.allclose(run_reference(model, {}, {"x": x})["y"], want, atol=1e-14)


def test_fold_scale_stays_exact():
    model = _model()
    w = seeded_weights(model)
    folded = FoldScale().run(Program(model, w))
    assert folded.changed and folded.program.model.block("attn").scale == 1.0
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    want = run_reference(model, w, feed)["y"]
    got = run_reference(folded.program.model, folded.program.weights, feed)["y"]
    assert np.max(np.abs(got - want)) <= 1e-6  # the folded weights are float32 again


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model(extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel scales queries by position" in explain[0].reason
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


# ------------------------------------------------------------------ IR, syntax, check


def test_ir_text_and_defaults():
    node = one_block("    heads: 4\n    temperature_tuning: true\n").block("attn").feature(
        "temperature_tuning")
    assert (node.attn_scale, node.floor_scale) == (0.1, 8192)
    assert "    temperature_tuning attn_scale=0.5, floor_scale=2\n" in print_ir(_model())


@pytest.mark.parametrize("value", ["true", "{attn_scale: 0.2}", "{floor_scale: 16}",
                                   "{attn_scale: 0.1, floor_scale: 8192}"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    temperature_tuning: {value}\n")
    assert_round_trips(text)


def test_example_spec_and_check():
    model = parse_spec((ROOT / "specs" / "temperature_llama4_nope.attn").read_text(), "t.attn")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    temperature_tuning q * (1 + 0.1 * log(floor((pos + 1) / 8192) + 1))" in report
    assert "12,288 parameters" in report  # no weights of its own


# ------------------------------------------------------------------ errors


def _where(err, text: str, needle: str) -> None:
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
    line = text.splitlines()[err.span.line - 1]
    assert line[err.span.col - 1:].startswith(needle), (line, err.span)


@pytest.mark.parametrize("value,message,at", [
    ("{floor_scale: 0}", "temperature_tuning floor_scale must be an integer >= 1, got 0", "0"),
    ("{floor_scale: 2.5}", "temperature_tuning floor_scale must be an integer >= 1", "2.5"),
    ("{attn_scale: -0.1}", "temperature_tuning attn_scale must be a positive number", "-0.1"),
    ("{floor: 3}", "unknown temperature_tuning key 'floor'", "floor"),
    ("fast", "temperature_tuning must be a mapping like {attn_scale: 0.1, floor_scale: 8192}",
     "fast"),
])
def test_errors(value, message, at):
    text = one_block_yaml(f"    heads: 4\n    temperature_tuning: {value}\n")
    err = error_of(text, "s.yaml")
    assert message in str(err)
    _where(err, text, at)
