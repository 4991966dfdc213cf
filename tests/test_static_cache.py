"""The static KV cache (``cache: {layout: static, max_len: N}``): preallocated buffers written at
the write position. A prefill then token-by-token loop with the static cache (buffers bound once,
written in place through ONNX Runtime's I/O binding) equals the same loop with the growing cache
(``cache: true``) and one full run, for causal, sliding-window, GQA, RoPE, ALiBi with padding, batch
2, float32 and float16, at opset 18 (ScatterElements, portable) and 24 (TensorScatter, the ort
target, which keeps the block portable); the reference interpreter agrees with the graph; the
syntax, the errors and the ``ort`` target's fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import one_block_yaml

from attndsl.api import Spec, parse_spec
from attndsl.errors import AttnDSLError, InputError, SpecError, SpecErrors
from attndsl.features.registry import cache_inputs
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.runtime.decode import decode_loop, decode_steps, max_errors, stitch
from attndsl.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
TOL = {"float32": 1e-5, "float16": 2e-3}  # static vs growing vs one full run
REF_TOL = {"float32": 1e-5, "float16": 5e-3}  # the graph vs the float64 reference
TOTAL, PROMPT, MAX_LEN = 9, 4, 12
STATIC = f"{{layout: static, max_len: {MAX_LEN}}}"

CASES = {
    "causal_gqa_rope": "    heads: 8\n    kv_heads: 2\n    mask: causal\n"
                       "    rope: {theta: 10000.0}",
    "sliding_gqa_rope": "    heads: 4\n    kv_heads: 2\n    mask: causal & sliding(3)\n"
                        "    rope: {theta: 500.0, dim: 4, interleaved: true}",
    "alibi_padding_prefix": "    heads: 4\n    mask: \"causal & padding(lens) | prefix(2)\"\n"
                            "    score: [alibi, softcap(20.0)]",
}
INPUTS = {"alibi_padding_prefix": "  lens: {shape: [batch], dtype: int64}"}


def spec(name: str, cache: str, dtype: str = "float32"):
    text = one_block_yaml(f"{CASES[name]}\n    cache: {cache}", name="static", dtype=dtype,
                          seed=3, inputs=INPUTS.get(name, ""),
                          outputs="y: attn\n  p: attn.weights")
    return parse_spec(text, f"{name}.yaml")


def options(opset: int) -> CompileOptions:
    """Opset 24 (TensorScatter) is the ort target's; it keeps a static cache portable."""
    return CompileOptions(opset=opset, target="ort" if opset >= 24 else "portable")


def loop(model, opset: int, inputs):
    proto = compile_model(model, load_weights(model), options=options(opset))
    onnx.checker.check_model(proto, full_check=True)
    return proto, decode_loop(model, proto, inputs, PROMPT)


@pytest.mark.parametrize("opset", [18, 24])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_static_equals_growing_token_by_token(name, dtype, opset):
    static, growing = spec(name, STATIC, dtype), spec(name, "true", dtype)
    inputs = {n: v for n, v in random_inputs(growing, {"batch": 2, "seq": TOTAL}, seed=4).items()
              if not n.startswith("attn.")}
    proto, run = loop(static, opset, inputs)
    op = "TensorScatter" if opset >= 24 else "ScatterElements"
    # the scatters write the graph outputs themselves (no Identity in between: ORT only
    # writes in place into a bound output buffer that the node itself produces)
    assert sorted(o for n in proto.graph.node if n.op_type == op for o in n.output) == [
        "attn.cache_key_out", "attn.cache_value_out"]
    tol = TOL[dtype]
    errors = max_errors(static, run)  # the steps (in place) against one full static run
    assert max(errors.values()) <= tol, errors
    _, grow = loop(growing, opset, inputs)
    s, g = stitch(static, run), stitch(growing, grow)

    def diff(a, b):
        return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))

    assert diff(s["y"], g["y"]) <= tol
    assert diff(s["p"][..., :TOTAL], g["p"]) <= tol and not s["p"][..., TOTAL:].any()
    shapes = cache_inputs(static.block("attn"), 2, 0)
    for w in ("key", "value"):
        buf = s[f"attn.cache_{w}_out"]
        assert buf.shape == shapes[f"attn.cache_{w}"]
        assert diff(buf[:, :, :TOTAL], g[f"attn.present_{w}"]) <= tol
        assert not buf[:, :, TOTAL:].any()  # the slots never written keep their zeros
    # the full run against the reference (zeroed buffers, write position 0)
    empty = {n: np.zeros(shape, np.int64 if shape == () else dtype) for n, shape in shapes.items()}
    want = run_reference(static, load_weights(static), {**inputs, **empty})
    for out, ref in want.items():
        assert diff(run.full[out], ref) <= REF_TOL[dtype], out


@pytest.mark.parametrize("past", [0, 5, MAX_LEN - 3])
def test_graph_matches_reference_on_random_buffers(past):
    """Random (not zeroed) buffers: the slots from the write position on are overwritten or
    masked, the ones before are the past keys, at both opsets."""
    model = spec("sliding_gqa_rope", STATIC)
    weights = load_weights(model)
    inputs = random_inputs(model, {"batch": 2, "seq": 3}, seed=7, past_len=past)
    assert int(inputs["attn.write_pos"]) == past
    want = run_reference(model, weights, inputs)
    assert want["p"].shape[-1] == MAX_LEN
    for opset in (18, 24):
        proto = compile_model(model, weights, options=options(opset))
        got = run_session(make_session(proto), inputs)
        for name, ref in want.items():
            assert np.max(np.abs(got[name] - ref)) <= 1e-5, (opset, name)
    # the buffers: the new rows at write_pos.., the rest as given
    key = want["attn.cache_key_out"]
    np.testing.assert_array_equal(key[:, :, :past], inputs["attn.cache_key"][:, :, :past])
    np.testing.assert_array_equal(key[:, :, past + 3:], inputs["attn.cache_key"][:, :, past + 3:])


FEATURE_SPECS = ["bias_qwen2.yaml", "diff_llama.attn", "output_gate_qwen3_next.yaml",
                 "qk_norm_qwen3.yaml", "rope_llama31_scaled.yaml", "sinks_gpt_oss.yaml",
                 "temperature_llama4_nope.attn"]


@pytest.mark.parametrize("name", FEATURE_SPECS)
def test_block_features_with_a_static_cache(name):
    """The repository's cached specs (every block feature but MLA's own cache) with their
    caches made static: the graph equals the reference on random buffers, and the reference
    equals the growing cache's over the slots before the write position."""
    path = ROOT / "specs" / name
    text = path.read_text()
    static_text = (text.replace("cache: true", "cache: {layout: static, max_len: 16}")
                   .replace("\n  cache\n", "\n  cache layout = static, max_len = 16\n"))
    assert static_text != text
    model, growing = parse_spec(static_text, path.name), parse_spec(text, path.name)
    weights = load_weights(model)
    dims = {d.name: 2 if d.name == "batch" else 3 for d in model.dims if d.size is None}
    inputs = random_inputs(model, dims, seed=2, past_len=5)
    want = run_reference(model, weights, inputs)
    for opset in (18, 24):
        proto = compile_model(model, weights, options=options(opset))
        got = run_session(make_session(proto), inputs)
        for out, ref in want.items():
            assert np.max(np.abs(got[out] - ref)) <= 1e-4, (opset, out)
    past = {}
    for b in growing.blocks:
        for w in ("key", "value"):
            past[f"{b.name}.past_{w}"] = inputs[f"{b.name}.cache_{w}"][:, :, :5]
    grow = run_reference(growing, weights, {**{i.name: inputs[i.name]
                                               for i in growing.inputs}, **past})
    for o in growing.outputs:
        ref = want[o.name] if o.attr != "weights" else want[o.name][..., :8]
        np.testing.assert_allclose(ref, grow[o.name], atol=1e-12)


def test_decode_steps_without_kept_caches_and_too_long():
    model = spec("causal_gqa_rope", STATIC)
    proto = compile_model(model, load_weights(model), options=options(24))
    inputs = {"x": random_inputs(model, {"batch": 2, "seq": TOTAL}, seed=1)["x"]}
    session = make_session(proto)
    kept, _ = decode_steps(model, session, inputs, PROMPT)
    lean, spans = decode_steps(model, session, inputs, PROMPT, keep_caches=False)
    assert len(spans) == TOTAL - PROMPT + 1
    assert all("attn.cache_key_out" not in s for s in lean[:-1])
    for a, b in zip(kept, lean, strict=True):
        np.testing.assert_array_equal(a["y"], b["y"])
    np.testing.assert_array_equal(kept[-1]["attn.cache_key_out"], lean[-1]["attn.cache_key_out"])
    # each kept step holds its own copy of the buffer: written up to its end
    assert not kept[0]["attn.cache_key_out"][:, :, PROMPT:].any()
    long = {"x": random_inputs(model, {"batch": 2, "seq": MAX_LEN + 1})["x"]}
    with pytest.raises(AttnDSLError, match="13 positions do not fit its static cache of 12"):
        decode_steps(model, session, long, 2)


def test_reference_rejects_a_write_past_the_buffer():
    model = spec("causal_gqa_rope", STATIC)
    inputs = random_inputs(model, {"batch": 1, "seq": 4}, past_len=MAX_LEN - 3)
    with pytest.raises(InputError, match="write position 9 with 4 new tokens does not fit"):
        run_reference(model, load_weights(model), inputs)


def test_syntax_both_ways_and_ir():
    model = spec("causal_gqa_rope", STATIC)
    b = model.block("attn")
    assert b.cache and b.static_cache and b.cache_max_len == MAX_LEN
    assert f"    cache layout=static, max_len={MAX_LEN}\n" in print_ir(model)
    s = Spec.parse(model.spec_text, "yaml")
    attn = s.to_attn()
    assert f"  cache layout = static, max_len = {MAX_LEN}\n" in attn
    assert parse_spec(attn, "s.attn") == model
    assert Spec.parse(attn, "attn").to_yaml() == s.to_yaml()
    grow = spec("causal_gqa_rope", "true")
    assert not grow.block("attn").static_cache and "    cache\n" in print_ir(grow)
    # `cache: {layout: growing}` and `cache: {}` are `cache: true`
    for same in ("{layout: growing}", "{}"):
        assert spec("causal_gqa_rope", same) == grow
    # the Python API: a mapping for cache
    api = Spec.parse(grow.spec_text, "yaml").with_block(
        "attn", cache={"layout": "static", "max_len": MAX_LEN})
    assert api.model() == model and api.block("attn")["cache"] == {
        "layout": "static", "max_len": MAX_LEN}


@pytest.mark.parametrize("cache, message", [
    ("{layout: statik, max_len: 4}", "cache layout must be one of growing, static, got "
                                     "'statik'"),
    ("{layout: static}", "a static cache needs 'max_len'"),
    ("{max_len: 4}", "'max_len' is for a static cache"),
    ("{layout: static, max_len: 0}", "cache max_len must be an integer >= 1, got 0"),
    ("{layot: static}", "unknown cache key 'layot'"),
    ("maybe", "'cache' must be true or false"),
])
def test_cache_setting_errors(cache, message):
    with pytest.raises((SpecError, SpecErrors), match=message) as err:
        spec("causal_gqa_rope", cache)
    assert "causal_gqa_rope.yaml:" in str(err.value)


def test_static_cache_refusals():
    cross = one_block_yaml(f"    key_value: src\n    heads: 2\n    cache: {STATIC}",
                           inputs="  src: [batch, seq, d]")
    with pytest.raises((SpecError, SpecErrors), match="a static cache needs self-attention"):
        parse_spec(cross, "c.yaml")
    ids = one_block_yaml(f"    heads: 2\n    mask: causal & document(ids)\n    cache: {STATIC}",
                         inputs="  ids: {shape: [batch, seq], dtype: int64}")
    with pytest.raises((SpecError, SpecErrors), match="input 'ids' is laid out over the keys"):
        parse_spec(ids, "d.yaml")


def test_ort_target_keeps_the_portable_lowering_with_a_reason():
    model = spec("causal_gqa_rope", STATIC)
    weights = load_weights(model)
    proto, explain = compile_with_explanations(model, weights,
                                               CompileOptions(target="ort", opset=24))
    assert "no fused op: a static KV cache" in explain[0].reason
    assert all(n.domain == "" for n in proto.graph.node)
    inputs = random_inputs(model, {"batch": 2, "seq": 2}, past_len=5)
    got, want = run_session(make_session(proto), inputs), run_reference(model, weights, inputs)
    assert max(float(np.max(np.abs(got[n] - want[n]))) for n in want) <= 1e-5


def test_viz_probabilities_cover_the_written_slots():
    """``attndsl viz``'s probability grid of a static-cache block has the written slots as
    its keys (past + new), not the buffer's max_len, and rows that sum to 1."""
    from attndsl.viz import example_inputs, prob_grid, run_lengths

    model = parse_spec((ROOT / "specs" / "static_cache.yaml").read_text(), "s.yaml")
    inputs = example_inputs(model, None, 4, 9, past_len=5)
    assert run_lengths(model, None, inputs) == (4, 9, 5)
    grid = prob_grid(model, None, inputs)
    assert grid.shape == (8, 4, 9)
    np.testing.assert_allclose(grid.sum(axis=-1), 1.0, atol=1e-12)
