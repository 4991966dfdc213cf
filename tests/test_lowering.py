"""The portable ONNX lowering, run in ONNX Runtime, against the numpy reference interpreter.

Each case is a spec (built from text), sizes for its dynamic dims and a past length; the
model is compiled, run on CPU and compared output by output (spec outputs and caches). The
largest error per feature is collected in ``ERRORS`` and printed at the end (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ErrorReport, one_block, output_error, run_both

from attndsl.api import parse_spec
from attndsl.inputs import random_inputs
from attndsl.ir.nodes import Model
from attndsl.lower.compile import compile_model
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

ATOL = {"float32": 2e-5, "float16": 3e-3}
ERRORS = ErrorReport("max abs error, ONNX Runtime vs reference:", width=44)
_report = ERRORS.fixture()


def spec(block: str, *, inputs: str = "", dims: str = "", dtype: str = "float32",
         outputs: str = "y: attn\n  p: attn.weights", blocks: str = "") -> Model:
    """A one-block spec around ``block`` (the settings of block ``attn``, 4-space indented)."""
    return one_block(block, dtype=dtype, seed=3, dims=dims, inputs=inputs, blocks=blocks,
                     outputs=outputs, path="x.yaml")


def check(model: Model, sizes: dict[str, int], feature: str, past_len: int = 0,
          opset: int = 18, inputs: dict[str, np.ndarray] | None = None) -> float:
    feed = inputs if inputs is not None else random_inputs(model, sizes, 0, past_len)
    got, want = run_both(model, feed, opset=opset)
    err = output_error(got, want, dtype=model.dtype, where=feature)
    ERRORS.record(f"{feature} [{model.dtype}]", err)
    assert err <= ATOL[model.dtype], f"{feature}: max abs error {err:.3g}"
    return err


SHAPES = [{"batch": 1, "seq": 1}, {"batch": 2, "seq": 5}, {"batch": 3, "seq": 8}]

HEADS = {
    "mha": "    heads: 4",
    "mqa": "    heads: 4\n    kv_heads: 1",
    "gqa": "    heads: 8\n    kv_heads: 2",
    "head_dims": "    heads: 2\n    kv_heads: 1\n    head_dim: 12\n    v_head_dim: 6",
    "bias_out_scale": "    heads: 4\n    kv_heads: 2\n    bias: true\n    out_dim: 24\n"
                      "    scale: 0.3",
}


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: f"b{s['batch']}s{s['seq']}")
@pytest.mark.parametrize("heads", HEADS)
def test_projection_and_heads(heads, sizes):
    check(spec(HEADS[heads] + "\n    mask: causal"), sizes, f"heads {heads}")


ROPE = {
    "default": "{theta: 10000.0}",
    "partial": "{theta: 500000.0, dim: 4}",
    "interleaved": "{theta: 10000.0, interleaved: true}",
    "interleaved_partial": "{theta: 100.0, dim: 6, interleaved: true}",
}


@pytest.mark.parametrize("sizes", SHAPES[1:], ids=lambda s: f"b{s['batch']}s{s['seq']}")
@pytest.mark.parametrize("rope", ROPE)
def test_rope(rope, sizes):
    check(spec(f"    heads: 4\n    kv_heads: 2\n    rope: {ROPE[rope]}"), sizes, f"rope {rope}")


SCORES = {
    "alibi_4": ("    heads: 4\n    score: [alibi]", ""),
    "alibi_6": ("    heads: 6\n    head_dim: 4\n    score: [alibi]", ""),
    "alibi_12": ("    heads: 12\n    head_dim: 4\n    kv_heads: 3\n    score: [alibi]", ""),
    "softcap": ("    heads: 4\n    scale: 4.0\n    score: [softcap(2.5)]", ""),
    "relative_bias": ("    heads: 4\n    score: [relative_bias(buckets=8, max_distance=6)]", ""),
    "relative_bias_causal": (
        "    heads: 4\n    score: [relative_bias(buckets=6, max_distance=5, bidirectional=false)]"
        "\n    mask: causal", ""),
    "relative_bias_default": ("    heads: 2\n    score: [relative_bias]", ""),
    "bias_b11s": ("    heads: 4\n    score: [bias(t)]", "  t: [batch, 1, 1, seq]"),
    "bias_full": ("    heads: 4\n    score: [bias(t)]", "  t: [batch, 4, seq, seq]"),
    "bias_2d": ("    heads: 4\n    score: [bias(t)]", "  t: [seq, seq]"),
    "all_in_order": ("    heads: 4\n    kv_heads: 2\n    mask: causal\n"
                     "    score: [bias(t), alibi, relative_bias(buckets=4, max_distance=9), "
                     "softcap(3.0)]", "  t: [1, 4, seq, seq]"),
}


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: f"b{s['batch']}s{s['seq']}")
@pytest.mark.parametrize("score", SCORES)
def test_score_modifiers(score, sizes):
    block, inputs = SCORES[score]
    check(spec(block, inputs=inputs), sizes, f"score {score}")


def test_relative_bias_far_positions():
    """Relative positions beyond max_distance use the saturated buckets (lookup clipping)."""
    model = spec("    heads: 2\n    score: [relative_bias(buckets=8, max_distance=4)]\n"
                 "    cache: true")
    check(model, {"batch": 1, "seq": 3}, "score relative_bias far", past_len=20)


MASKS = {
    "none": "none",
    "causal": "causal",
    "window": "window(2, 1)",
    "window_future": "window(0, 2)",
    "sliding": "sliding(3)",
    "dilated": "dilated(4, 2, 2)",
    "strided": "strided(3)",
    "chunk": "chunk(3)",
    "summary": "summary(4, 2)",
    "prefix": "prefix(2)",
    "global": "global(0, 3)",
    "heads": "heads(1..2) | causal",
    "heads_list": "heads(0, 3)",
    "padding": "padding(lens)",
    "prefix_input": "causal | prefix(lens)",
    "document": "document(ids) & causal",
    "mask_input": "mask(m)",
    "not": "~causal",
    "and_or": "causal & sliding(3) | prefix(2)",
    "longformer": "sliding(2) | global(1, 4) | ~(strided(2) & chunk(4))",
    "padding_and_doc": "(window(1, 1) | global(0)) & padding(lens) & document(ids)",
}
MASK_INPUTS = ("  lens: {shape: [batch], dtype: int64}\n"
               "  ids: {shape: [batch, seq], dtype: int64}\n"
               "  m: {shape: [batch, 1, seq, seq], dtype: bool}")


@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: f"b{s['batch']}s{s['seq']}")
@pytest.mark.parametrize("mask", MASKS)
def test_masks(mask, sizes):
    model = spec(f"    heads: 4\n    kv_heads: 2\n    mask: \"{MASKS[mask]}\"", inputs=MASK_INPUTS)
    check(model, sizes, f"mask {mask}")


@pytest.mark.parametrize("seq", [1, 5, 9])
def test_random_mask(seq):
    text = f"""\
attndsl: 1
dims: {{batch: dynamic, s: {seq}}}
inputs: {{x: [batch, s, 16]}}
blocks:
  attn: {{query: x, heads: 2, mask: "random(1, block=2, seed=5) & ~causal | causal & chunk(4)"}}
outputs: {{y: attn, p: attn.weights}}
"""
    check(parse_spec(text, "x.yaml"), {"batch": 2}, "mask random")


def test_random_mask_cross_attention():
    text = """\
attndsl: 1
dims: {batch: dynamic, s: 5, t: 11}
inputs: {x: [batch, s, 16], e: [batch, t, 16]}
blocks:
  attn: {query: x, key_value: e, heads: 2, mask: "random(2, block=3, seed=1) | heads(1)"}
outputs: {y: attn, p: attn.weights}
"""
    check(parse_spec(text, "x.yaml"), {"batch": 2}, "mask random cross")


def test_mask_int32_inputs():
    model = spec("    heads: 2\n    mask: \"padding(lens) & document(ids)\"",
                 inputs="  lens: {shape: [batch], dtype: int32}\n"
                        "  ids: {shape: [batch, seq], dtype: int32}")
    check(model, {"batch": 2, "seq": 6}, "mask int32 inputs")


@pytest.mark.parametrize("past_len", [0, 1, 4])
@pytest.mark.parametrize("seq", [1, 3])
def test_cache(past_len, seq):
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: {theta: 10000.0}\n"
                 "    cache: true")
    check(model, {"batch": 2, "seq": seq}, "cache rope gqa", past_len=past_len)


@pytest.mark.parametrize("past_len", [0, 2, 6])
def test_cache_gqa_window_alibi(past_len):
    model = spec("    heads: 6\n    head_dim: 4\n    kv_heads: 2\n    mask: \"window(3, 0)\"\n"
                 "    score: [alibi]\n    rope: {theta: 10000.0, dim: 2}\n    cache: true")
    check(model, {"batch": 2, "seq": 3}, "cache gqa window alibi", past_len=past_len)


def test_cache_document_padding():
    model = spec("    heads: 2\n    mask: \"causal & document(ids) & padding(lens)\"\n"
                 "    cache: true", inputs="  lens: {shape: [batch], dtype: int64}\n"
                 "  ids: {shape: [batch, total], dtype: int64}",
                 dims="  total: dynamic")
    check(model, {"batch": 2, "seq": 3, "total": 7}, "cache document padding", past_len=4)


def test_cache_matches_full_sequence():
    """Running the prompt then one step with the cache equals one run over everything."""
    model = spec("    heads: 4\n    kv_heads: 1\n    mask: causal\n    rope: {theta: 10000.0}\n"
                 "    cache: true")
    weights = load_weights(model)
    session = make_session(compile_model(model, weights))
    x = np.random.default_rng(1).standard_normal((2, 6, 32)).astype(np.float32)
    empty = np.zeros((2, 1, 0, 8), np.float32)
    full = run_session(session, {"x": x, "attn.past_key": empty, "attn.past_value": empty})
    first = run_session(session, {"x": x[:, :5], "attn.past_key": empty,
                                  "attn.past_value": empty})
    step = run_session(session, {"x": x[:, 5:], "attn.past_key": first["attn.present_key"],
                                 "attn.past_value": first["attn.present_value"]})
    np.testing.assert_allclose(step["y"], full["y"][:, 5:], atol=1e-6)
    np.testing.assert_allclose(step["attn.present_key"], full["attn.present_key"], atol=1e-6)


ENC_DEC = """\
attndsl: 1
dims: {batch: dynamic, src: dynamic, tgt: dynamic, d: 32}
inputs:
  src_x: [batch, src, d]
  tgt_x: [batch, tgt, d]
  src_len: {shape: [batch], dtype: int64}
blocks:
  enc:
    query: src_x
    heads: 4
    mask: padding(src_len)
    score: [relative_bias(buckets=8, max_distance=16)]
  dec:
    query: tgt_x
    heads: 4
    kv_heads: 2
    mask: causal
    rope: {theta: 10000.0}
    cache: CACHE
  cross:
    query: dec
    key_value: enc
    heads: 2
    mask: MASK
    score: [alibi]
    cache: CACHE
  post:
    query: cross
    heads: 2
    out_dim: 16
outputs:
  out: post
  cross_probs: cross.weights
  enc_out: enc
"""


@pytest.mark.parametrize("sizes", [{"batch": 1, "src": 1, "tgt": 1},
                                   {"batch": 2, "src": 7, "tgt": 4},
                                   {"batch": 3, "src": 3, "tgt": 6}],
                         ids=lambda s: f"b{s['batch']}s{s['src']}t{s['tgt']}")
@pytest.mark.parametrize("mask", ["padding(src_len)", "causal", "sliding(2)"])
def test_encoder_decoder(mask, sizes):
    model = parse_spec(ENC_DEC.replace("MASK", mask).replace("CACHE", "false"), "x.yaml")
    check(model, sizes, "chained encoder-decoder")


@pytest.mark.parametrize("past_len", [0, 3])
def test_encoder_decoder_cache(past_len):
    """Cross-attention with a cache: queries at i, keys past first."""
    model = parse_spec(ENC_DEC.replace("MASK", "sliding(3)").replace("CACHE", "true"), "x.yaml")
    check(model, {"batch": 2, "src": 5, "tgt": 3}, "chained encoder-decoder cache",
          past_len=past_len)


CORE = """\
attndsl: 1
dims: {batch: dynamic, sq: dynamic, sk: dynamic}
inputs:
  q: [batch, sq, 32]
  k: [batch, sk, 16]
  v: [batch, sk, 24]
blocks:
  core:
    project: false
    query: q
    key: k
    value: v
    heads: 4
    kv_heads: 2
    mask: MASK
    rope: {theta: 10000.0}
    cache: CACHE
outputs: {y: core, p: core.weights}
"""


@pytest.mark.parametrize("mask", ["all", "causal", "sliding(2)", "chunk(4) | prefix(1)"])
@pytest.mark.parametrize("sizes", [{"batch": 1, "sq": 1, "sk": 1}, {"batch": 2, "sq": 5, "sk": 3},
                                   {"batch": 2, "sq": 3, "sk": 6}],
                         ids=lambda s: f"b{s['batch']}q{s['sq']}k{s['sk']}")
def test_core_mode(sizes, mask):
    model = parse_spec(CORE.replace("MASK", mask).replace("CACHE", "false"), "x.yaml")
    check(model, sizes, "core mode")


def test_core_mode_cache():
    model = parse_spec(CORE.replace("MASK", "causal").replace("CACHE", "true"), "x.yaml")
    check(model, {"batch": 2, "sq": 2, "sk": 2}, "core mode cache", past_len=3)


FP16 = {
    "mistral": "    heads: 4\n    kv_heads: 2\n    mask: \"causal & sliding(4) & padding(lens)\"\n"
               "    score: [alibi, softcap(30.0)]\n    rope: {theta: 10000.0}\n    bias: true",
    "t5_bias": "    heads: 4\n    score: [relative_bias(buckets=8, max_distance=16), bias(t)]\n"
               "    mask: mask(m)",
    "cache": "    heads: 4\n    kv_heads: 1\n    mask: causal\n    rope: {theta: 10000.0, dim: 4}\n"
             "    cache: true",
}
FP16_INPUTS = "  lens: {shape: [batch], dtype: int64}\n  t: [batch, 1, seq, seq]\n" \
              "  m: {shape: [1, 1, seq, seq], dtype: bool}"


@pytest.mark.parametrize("name", FP16)
def test_float16(name):
    model = spec(FP16[name], inputs=FP16_INPUTS, dtype="float16")
    check(model, {"batch": 2, "seq": 7}, f"fp16 {name}", past_len=3)


def test_float16_encoder_decoder():
    text = ENC_DEC.replace("MASK", "causal").replace("CACHE", "true")
    model = parse_spec(text.replace("attndsl: 1", "attndsl: 1\ndtype: float16"), "x.yaml")
    check(model, {"batch": 2, "src": 5, "tgt": 3}, "fp16 encoder-decoder", past_len=2)


def test_dynamic_dims_one_model():
    """One compiled model serves several batch sizes and lengths."""
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: \"causal & padding(lens)\"\n"
                 "    rope: {theta: 10000.0}\n    cache: true",
                 inputs="  lens: {shape: [batch], dtype: int64}")
    weights = load_weights(model)
    session = make_session(compile_model(model, weights))
    for sizes, past in (({"batch": 1, "seq": 3}, 0), ({"batch": 4, "seq": 9}, 2),
                        ({"batch": 2, "seq": 1}, 5)):
        feed = random_inputs(model, sizes, seed=sizes["batch"], past_len=past)
        got, want = run_session(session, feed), run_reference(model, weights, feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=2e-5)
    assert [i.name for i in session.get_inputs()] == ["x", "lens", "attn.past_key",
                                                       "attn.past_value"]
    assert session.get_inputs()[0].shape == ["batch", "seq", 32]
    assert session.get_inputs()[2].shape == ["batch", 2, "past_len", 8]
    assert [o.name for o in session.get_outputs()] == ["y", "p", "attn.present_key",
                                                        "attn.present_value"]
    assert session.get_outputs()[1].shape == ["batch", 4, "seq", "present_len"]


def test_fixed_dims():
    text = """\
attndsl: 1
dims: {batch: 2, seq: 5, d: 16}
inputs: {x: [batch, seq, d]}
blocks: {attn: {query: x, heads: 2, mask: causal}}
outputs: {y: attn, p: attn.weights}
"""
    model = parse_spec(text, "x.yaml")
    session = make_session(compile_model(model))
    assert session.get_inputs()[0].shape == [2, 5, 16]
    assert session.get_outputs()[1].shape == [2, 2, 5, 5]
    check(model, {}, "fixed dims")


# ------------------------------------------------------------ fully masked rows

def _masked_case(mask: str, inputs: str = "", score: str = "", dtype: str = "float32",
                 bias: bool = False) -> Model:
    block = f"    heads: 4\n    kv_heads: 2\n    mask: \"{mask}\"\n    rope: {{theta: 10000.0}}"
    if score:
        block += f"\n    score: [{score}]"
    if bias:
        block += "\n    bias: true"
    return spec(block, inputs=inputs, dtype=dtype)


def _run_exact(model: Model, feed: dict[str, np.ndarray]):
    got, want = run_both(model, feed)
    output_error(got, want, dtype=model.dtype)  # same outputs, shapes and dtypes; no NaN
    return got, want


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mask_none_gives_zeros(dtype):
    model = _masked_case("none", dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(dtype)
    got, _ = _run_exact(model, {"x": x})
    assert np.all(got["y"] == 0) and np.all(got["p"] == 0)


def test_padding_zero_length_row():
    model = _masked_case("padding(lens) & causal", "  lens: {shape: [batch], dtype: int64}")
    x = np.random.default_rng(0).standard_normal((3, 4, 32)).astype(np.float32)
    got, want = _run_exact(model, {"x": x, "lens": np.array([0, 2, 4])})
    assert np.all(got["y"][0] == 0) and np.all(got["p"][0] == 0)
    assert np.abs(got["y"][1:]).min() > 0
    np.testing.assert_allclose(got["y"], want["y"], atol=2e-5)
    np.testing.assert_allclose(got["p"], want["p"], atol=2e-5)


def test_heads_mask_zeroes_other_heads():
    model = _masked_case("heads(1)")
    x = np.random.default_rng(0).standard_normal((2, 3, 32)).astype(np.float32)
    got, want = _run_exact(model, {"x": x})
    p = got["p"]
    assert np.all(p[:, [0, 2, 3]] == 0)
    np.testing.assert_allclose(p[:, 1].sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got["y"], want["y"], atol=2e-5)


@pytest.mark.parametrize("score", ["bias(t)", "bias(t), softcap(2.0)", "softcap(2.0), bias(t)"])
def test_bias_neg_inf_counts_as_masked(score):
    """-inf in bias(t) masks the cell (also when a softcap after it would make it finite);
    a row that is -inf on every allowed key gives 0."""
    model = _masked_case("causal", "  t: [batch, 1, seq, seq]", score)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 32)).astype(np.float32)
    t = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    t[0, 0, 2, :] = -np.inf  # row 2 of batch 0: no key left
    t[1, 0, 3, 1] = -np.inf  # one cell
    got, want = _run_exact(model, {"x": x, "t": t})
    assert np.all(got["p"][0, :, 2] == 0)
    assert np.all(got["p"][1, :, 3, 1] == 0)
    np.testing.assert_allclose(got["p"], want["p"], atol=2e-5)
    np.testing.assert_allclose(got["y"], want["y"], atol=2e-5)


def test_fully_masked_rows_with_output_bias():
    """The attention output of a masked row is 0; the output projection still adds its bias."""
    model = _masked_case("none", bias=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 32)).astype(np.float32)
    got, want = _run_exact(model, {"x": x})
    bias = load_weights(model)["attn.o_proj.bias"]
    np.testing.assert_allclose(got["y"], np.broadcast_to(bias, got["y"].shape), atol=1e-7)
    np.testing.assert_allclose(got["y"], want["y"], atol=1e-7)


def test_cross_attention_rows_past_the_keys():
    """Cross-attention sliding(2) with fewer keys than queries: late queries see no key."""
    model = parse_spec(ENC_DEC.replace("MASK", "sliding(2)").replace("CACHE", "false"), "x.yaml")
    feed = random_inputs(model, {"batch": 2, "src": 2, "tgt": 6})
    got, want = _run_exact(model, feed)
    assert np.all(got["cross_probs"][:, :, 3:] == 0)
    np.testing.assert_allclose(got["out"], want["out"], atol=2e-5)


def test_core_mode_short_keys_rows_masked():
    """Core mode is self-attention (q = past_len + i) even when the key stream is shorter."""
    model = parse_spec(CORE.replace("MASK", "sliding(2)").replace("CACHE", "false"), "x.yaml")
    feed = random_inputs(model, {"batch": 1, "sq": 6, "sk": 2})
    got, want = _run_exact(model, feed)
    assert np.all(got["p"][:, :, 3:] == 0)
    np.testing.assert_allclose(got["y"], want["y"], atol=2e-5)
