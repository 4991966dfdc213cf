"""``--target ort``: fused ONNX Runtime kernels where a block maps exactly, the portable
lowering otherwise — run in ONNX Runtime and compared with the numpy reference.

Each case names the lowering it must get (so a mapping that silently stops matching fails)
and is checked with a prefill (past_len 0) and, with a cache, a multi-token step and a
one-token step after a past (batch 2), fp32 to 1e-4. The largest error per kernel is printed
at the end (``pytest -s``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ErrorReport, one_block, output_error, run_both
from onnx_suite import Translation, attention_cases, compare, translate
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from attndsl.api import load_spec, parse_spec
from attndsl.errors import LoweringError
from attndsl.features import nodes as mn
from attndsl.inputs import random_inputs
from attndsl.ir.nodes import Model
from attndsl.lower.compile import (
    CompileOptions,
    compile_model,
    compile_with_explanations,
    model_bytes,
)
from attndsl.lower.ort_contrib import GQA, MHA, mask_pattern, split_scores
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.weights import load_weights

ATOL = {"float32": 1e-4, "float16": 5e-3}
ERRORS = ErrorReport("max abs error, --target ort in ONNX Runtime vs reference:", width=52)
_report = ERRORS.fixture()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ATT23 = "Attention-23"


def spec(block: str, *, inputs: str = "", dtype: str = "float32", outputs: str = "y: attn",
         blocks: str = "", width: int = 64) -> Model:
    return one_block(block, dtype=dtype, seed=5, d=width, inputs=inputs, blocks=blocks,
                     outputs=outputs)


# The kernel mappings are checked with --sparse dense, which keeps every exact kernel; which
# of an exact kernel and the portable plan --sparse auto picks (the measured cost model) is
# tests/test_ort_cost.py's, and test_examples / test_portable_plan_beats_... run it here.
def compiled(model: Model, opset: int = 23, sparse: str = "dense"
             ) -> tuple[onnx.ModelProto, list]:
    return compile_with_explanations(model, load_weights(model),
                                     CompileOptions(opset=opset, target="ort", sparse=sparse))


def check(model: Model, lowering: str | list[str], opset: int = 23,
          inputs: dict[str, np.ndarray] | None = None, sparse: str = "dense") -> float:
    """Compile for the ort target, assert the lowering per block, compare with the reference
    (prefill; with a cache also a 3-token and a 1-token step after 5 past positions)."""
    proto, explain = compiled(model, opset, sparse)
    want_low = lowering if isinstance(lowering, list) else [lowering]
    got_low = [e.lowering.split("/")[0] for e in explain]  # portable/<strategy> -> portable
    assert got_low == want_low, explain
    weights = load_weights(model)
    session = make_session(proto)
    steps = [(6, 0)]
    if any(b.cache for b in model.blocks):
        steps += [(3, 5), (1, 5)]
    err = 0.0
    for seq, past in steps:
        feed = inputs if inputs is not None else random_inputs(
            model, {"batch": 2, "seq": seq}, seed=seq + past, past_len=past)
        got, want = run_both(model, feed, weights=weights, session=session)
        err = max(err, output_error(got, want, dtype=model.dtype, where=(seq, past)))
    ERRORS.record(f"{'+'.join(want_low)} [{model.dtype}]", err)
    assert err <= ATOL[model.dtype], f"max abs error {err:.3g}"
    return err


# ------------------------------------------------------------------ fused mappings
LENGTHS = "  lengths: {shape: [batch], dtype: int64}"
FUSED = {
    # GroupQueryAttention: causal / sliding (local_window_size = w: keys q-w+1..q)
    "gqa_causal": ("    heads: 8\n    kv_heads: 2\n    mask: causal", "", GQA),
    "gqa_mqa_cache": ("    heads: 4\n    kv_heads: 1\n    mask: causal\n    cache: true", "",
                      GQA),
    "gqa_sliding_cache": ("    heads: 8\n    kv_heads: 2\n    mask: causal & sliding(3)\n"
                          "    cache: true", "", GQA),
    "gqa_sliding_sparse_dense": ("    heads: 4\n    mask: sliding(5)\n    rope: {theta: 100.0}",
                                 "", GQA),
    "gqa_window_as_sliding": ("    heads: 4\n    kv_heads: 2\n    mask: window(2, 0)\n"
                              "    cache: true", "", GQA),
    "gqa_window_clipped_by_causal": ("    heads: 4\n    mask: causal & window(3, 5)\n"
                                     "    cache: true", "", GQA),
    "gqa_softcap_scale": ("    heads: 4\n    kv_heads: 2\n    mask: causal\n    scale: 0.9\n"
                          "    score: [softcap(2.5)]\n    cache: true", "", GQA),
    "gqa_softcap_alibi": ("    heads: 4\n    mask: causal\n    score: [softcap(5.0), alibi]\n"
                          "    cache: true", "", GQA),
    "gqa_relative_bias": ("    heads: 4\n    kv_heads: 2\n    mask: causal\n"
                          "    score: [relative_bias(buckets=8, max_distance=6)]", "", GQA),
    "gqa_rope_fused": ("    heads: 4\n    kv_heads: 2\n    mask: causal & sliding(4)\n"
                       "    rope: {theta: 10000.0}\n    cache: true", "", GQA),
    "gqa_rope_fused_partial_interleaved": (
        "    heads: 2\n    kv_heads: 1\n    mask: causal\n"
        "    rope: {theta: 500.0, dim: 16, interleaved: true}\n    cache: true", "", GQA),
    "gqa_rope_unfused_dim8": ("    heads: 4\n    kv_heads: 2\n    mask: causal\n"
                              "    rope: {theta: 10000.0, dim: 8}\n    cache: true", "", GQA),
    "gqa_noncausal": ("    heads: 8\n    kv_heads: 2\n    rope: {theta: 10000.0}", "", GQA),
    "gqa_bias_proj": ("    heads: 4\n    kv_heads: 2\n    bias: true\n    out_dim: 24\n"
                      "    mask: causal", "", GQA),
    # MultiHeadAttention: dense, padding (lowest filter + zero guard), cache, additive scores
    "mha_dense": ("    heads: 4", "", MHA),
    "mha_cache": ("    heads: 4\n    cache: true\n    rope: {theta: 10000.0, dim: 6}", "", MHA),
    "mha_padding_alibi": ("    heads: 4\n    mask: padding(lengths)\n    score: [alibi]", LENGTHS,
                          MHA),
    "mha_padding_cache": ("    heads: 4\n    mask: padding(lengths)\n    cache: true", LENGTHS,
                          MHA),
    "mha_head_dim_5": ("    heads: 3\n    head_dim: 5\n    v_head_dim: 7", "", MHA),
    # ONNX Attention (opset 23): what the contrib kernels cannot take
    "att_causal_padding": ("    heads: 4\n    kv_heads: 2\n    mask: causal & padding(lengths)",
                           LENGTHS, ATT23),
    "att_weights_cache": ("    heads: 4\n    kv_heads: 2\n    mask: causal\n    cache: true",
                          "", ATT23),
    "att_dv_cache": ("    heads: 4\n    v_head_dim: 8\n    cache: true", "", ATT23),
    "att_softcap_dense": ("    heads: 4\n    score: [softcap(3.0)]\n    cache: true", "", ATT23),
    "att_bias_input": ("    heads: 4\n    mask: causal\n    score: [bias(t)]",
                       "  t: [batch, 4, seq, seq]", ATT23),
    "att_mask_input_document": ("    heads: 4\n    kv_heads: 1\n    mask: mask(m) & document(ids)",
                                "  m: {shape: [batch, 1, seq, seq], dtype: bool}\n"
                                "  ids: {shape: [batch, seq], dtype: int64}", ATT23),
    "att_causal_head_dim_12": ("    heads: 4\n    head_dim: 12\n    mask: causal", "", ATT23),
}
OUTPUTS = {"att_weights_cache": "y: attn\n  p: attn.weights"}
@pytest.mark.parametrize("name", FUSED)
def test_fused_matches_reference(name):
    block, inputs, lowering = FUSED[name]
    check(spec(block, inputs=inputs, outputs=OUTPUTS.get(name, "y: attn")), lowering)


@pytest.mark.parametrize("name,why", [
    ("gqa_sliding_sparse_dense", ("portable band (est.", "over ort GroupQueryAttention (est.")),
    ("att_causal_padding", ("portable chunks (est.", "over ort Attention (est.")),
    ("att_causal_head_dim_12", ("portable chunks (est.", "over ort Attention (est."))])
def test_portable_plan_beats_kernels_that_compute_more(name, why):
    """Under --sparse auto the cost model (``ort_cost``) weighs the exact kernel against the
    block-sparse plan: the band beats GQA's local window without a cache (about the causal
    triangle), query chunks beat Attention (every pair), and --explain gives both
    estimates."""
    block, inputs, _ = FUSED[name]
    model = spec(block, inputs=inputs)
    _, explain = compiled(model, sparse="auto")
    assert explain[0].lowering.startswith("portable/block-sparse"), explain
    assert all(w in explain[0].reason for w in why), explain[0].reason
    check(model, "portable", sparse="auto")


@pytest.mark.parametrize("name", ["gqa_sliding_cache", "gqa_rope_fused", "mha_cache",
                                  "att_weights_cache", "gqa_softcap_alibi"])
def test_fused_float16(name):
    block, inputs, lowering = FUSED[name]
    check(spec(block, inputs=inputs, dtype="float16",
               outputs=OUTPUTS.get(name, "y: attn")), lowering)


def test_attention_opset_24():
    block, inputs, _ = FUSED["att_weights_cache"]
    check(spec(block, outputs=OUTPUTS["att_weights_cache"]), "Attention-24", opset=24)


def test_window_convention_is_tested():
    """local_window_size off by one would change the outputs: a sliding(3) model and a
    sliding(4) model disagree by far more than the tolerance on the same inputs."""
    m3 = spec(FUSED["gqa_sliding_cache"][0])
    m4 = spec(FUSED["gqa_sliding_cache"][0].replace("sliding(3)", "sliding(4)"))
    feed = random_inputs(m3, {"batch": 2, "seq": 6})
    y3 = run_session(make_session(compiled(m3)[0]), feed)["y"]
    y4 = run_reference(m4, load_weights(m4), feed)["y"]
    assert np.abs(y3 - y4).max() > 100 * ATOL["float32"]


def test_padding_length_zero_gives_zero_rows():
    """MultiHeadAttention would average the values of a fully masked row (its mask filter is
    finite); the guard makes it 0 as docs/language.md says."""
    model = spec(FUSED["mha_padding_alibi"][0], inputs=LENGTHS)
    feed = random_inputs(model, {"batch": 3, "seq": 5})
    feed["lengths"] = np.array([0, 2, 9], np.int64)
    check(model, MHA, inputs=feed)
    assert np.all(run_session(make_session(compiled(model)[0]), feed)["y"][0] == 0)


def test_large_logits_do_not_leak_through_the_mask():
    """MHA's default mask_filter_value (-10000) lets a padded key with a logit 1e5 above the
    others win; attndsl sets the lowest float32."""
    model = spec("    heads: 1\n    project: false\n    key: k\n    value: v\n    scale: 1.0\n"
                 "    mask: padding(lengths)", inputs="  k: [batch, seq, d]\n  v: [batch, seq, d]\n"
                 + LENGTHS, width=8)
    x = np.zeros((1, 3, 8), np.float32)
    x[0, :, 0] = 1.0
    k = np.zeros((1, 3, 8), np.float32)
    k[0, 2, 0] = 1e5
    v = np.arange(24, dtype=np.float32).reshape(1, 3, 8)
    feed = {"x": x, "k": k, "v": v, "lengths": np.array([2], np.int64)}
    check(model, MHA, inputs=feed)


def test_decode_loop_with_fused_cache():
    """Prefill then one token at a time, each step's present fed back as past (GQA with
    query_seqlens, batch 2): the stitched steps equal one full run and the reference."""
    model = spec(FUSED["gqa_rope_fused"][0])
    proto, explain = compiled(model)
    assert explain[0].lowering == GQA
    feed = random_inputs(model, {"batch": 2, "seq": 9})
    run = decode_loop(model, proto, feed, prompt_len=4)
    assert max(max_errors(model, run).values()) < 1e-5
    want = run_reference(model, load_weights(model), feed)  # (feed has empty caches)
    assert np.abs(run.full["y"] - want["y"]).max() < ATOL["float32"]


CROSS = """\
attndsl: 1
name: cross
dims: {{batch: dynamic, seq: dynamic, src: dynamic, d: 32}}
inputs:
  x: [batch, seq, d]
  e: [batch, src, d]
blocks:
  attn: {{query: x, key_value: e, heads: 4, kv_heads: {kv}, mask: {mask}, cache: true,
         rope: {{theta: 100.0, dim: 6}}}}
outputs:
  y: attn
"""


@pytest.mark.parametrize("kv,mask,lowering", [(4, "all", MHA), (2, "all", ATT23),
                                              (2, "causal", ATT23)])
def test_cross_attention_with_cache_and_rope(kv, mask, lowering):
    """Queries at i, keys at past + j (RoPE offsets differ); causal in cross-attention is a
    bool mask (Attention's is_causal would align it at the past length)."""
    check(parse_spec(CROSS.format(kv=kv, mask=mask), "cross.yaml"), lowering)


# ------------------------------------------------------------------ fallbacks
FALLBACK = {
    "chunk": ("    heads: 4\n    mask: chunk(4)", 23, "mask chunk(4) has no fused equivalent"),
    "lookahead": ("    heads: 4\n    kv_heads: 2\n    mask: window(2, 1)", 23,
                  "attends to later keys"),
    "alibi_then_softcap": ("    heads: 4\n    mask: causal\n    score: [alibi, softcap(5.0)]", 23,
                           "softcap after another score modifier"),
    "causal_head_dim_12_opset18": ("    heads: 4\n    head_dim: 12\n    mask: causal", 18,
                                   "head_dim 12 is not a multiple of 8"),
    "sliding_head_dim_12": ("    heads: 4\n    head_dim: 12\n    mask: sliding(3)", 23,
                            "Attention-23 has no window"),
    "gqa_dense_cache_opset18": ("    heads: 4\n    kv_heads: 2\n    cache: true", 18,
                                "non-causal with a KV cache"),
    "excludes_diagonal": ("    heads: 4\n    mask: causal & ~window(0, 0)", 23,
                          "has no fused equivalent"),
}


@pytest.mark.parametrize("name", FALLBACK)
def test_fallback_is_portable_and_says_why(name):
    block, opset, why = FALLBACK[name]
    model = spec(block)
    _, explain = compiled(model, opset)
    assert explain[0].lowering.startswith("portable"), explain
    assert why in explain[0].reason and "no fused op" in explain[0].reason
    check(model, "portable", opset=opset)


def test_mixed_model_fused_and_portable_blocks():
    more = ("  chunked:\n    query: attn\n    heads: 4\n    mask: chunk(3)\n"
            "  cross:\n    query: chunked\n    key_value: x\n    heads: 2\n"
            "    mask: padding(lengths)\n    cache: true")
    model = spec("    heads: 4\n    kv_heads: 2\n    mask: causal & sliding(3)\n"
                 "    rope: {theta: 10000.0}\n    cache: true", inputs=LENGTHS, blocks=more,
                 outputs="y: cross\n  z: attn")
    check(model, [GQA, "portable", MHA])
    proto, _ = compiled(model)
    domains = {n.domain for n in proto.graph.node}
    assert domains == {"", "com.microsoft"}
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 23),
                                                                   ("com.microsoft", 1)}


# ------------------------------------------------------------------ the model as a whole
def test_model_is_checked_stamped_and_deterministic():
    model = spec(FUSED["gqa_rope_fused"][0])
    proto = compile_model(model, options=CompileOptions(opset=23, target="ort"))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["attndsl.target"] == "ort" and meta["attndsl.opset"] == "23"
    again = compile_model(model, options=CompileOptions(opset=23, target="ort"))
    assert model_bytes(proto) == model_bytes(again)


def test_portable_only_model_has_no_contrib_domain():
    model = spec("    heads: 4\n    mask: chunk(2)")
    proto = compile_model(model, options=CompileOptions(opset=18, target="ort"))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]


def test_contrib_nodes_match_ort_schemas():
    """onnx's checker has no schemas for com.microsoft: check each contrib node's inputs and
    attributes against ONNX Runtime's own schema."""
    schemas = {s.name: s for s in ort_state.get_all_operator_schema()
               if s.domain == "com.microsoft"}
    seen = set()
    for name in FUSED:
        block, inputs, _ = FUSED[name]
        proto, _ = compiled(spec(block, inputs=inputs, outputs=OUTPUTS.get(name, "y: attn")))
        for node in proto.graph.node:
            if node.domain != "com.microsoft":
                continue
            schema = schemas[node.op_type]
            seen.add(node.op_type)
            assert len(node.input) <= len(schema.inputs)
            assert len(node.output) <= len(schema.outputs)
            assert {a.name for a in node.attribute} <= set(schema.attributes), node.op_type
    assert seen == {"GroupQueryAttention", "MultiHeadAttention", "RotaryEmbedding"}


@pytest.mark.parametrize("opset,target", [(22, "portable"), (25, "ort"), (16, "ort")])
def test_opsets_per_target(opset, target):
    with pytest.raises(LoweringError, match=f"opset {opset}"):
        compile_model(spec("    heads: 4"), options=CompileOptions(opset=opset, target=target))


def test_unknown_target():
    with pytest.raises(LoweringError, match="unknown target"):
        compile_model(spec("    heads: 4"), options=CompileOptions(target="tensorrt"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples(path):
    model = load_spec(path)
    _, explain = compiled(model, sparse="auto")  # whatever the cost model picks, run
    check(model, [e.lowering.split("/")[0] for e in explain], sparse="auto")


# ------------------------------------------------------------------ ONNX's Attention suite
SUITE = [c for c in attention_cases() if isinstance(translate(c), Translation)]


@pytest.mark.parametrize("case", SUITE, ids=lambda c: c.name)
def test_onnx_attention_suite_through_ort_target(case):
    """ONNX's backend node tests for Attention, as attndsl specs compiled for the ort target,
    against onnx's expected outputs with the runner's tolerances; fp16 cases get rtol 3e-3
    (the fused kernels compute in fp16 and land up to 2 ulp from onnx's expected values, where
    the portable lowering's float32 softmax stays within the runner's 1e-3)."""
    tr = translate(case)
    model = parse_spec(tr.spec, f"{case.name}.yaml")
    proto = compile_model(model, options=CompileOptions(opset=23, target="ort"))
    if model.dtype == "float16":
        case = dataclasses.replace(case, rtol=max(case.rtol, 3e-3))
    compare(case, tr.case_outputs(run_session(make_session(proto), tr.feeds)))


# ------------------------------------------------------------------ analysis units
@pytest.mark.parametrize("mask,want", [
    (mn.All(), (False, None)), (mn.Causal(), (True, None)), (mn.Sliding(5), (True, 5)),
    (mn.And((mn.Causal(), mn.Sliding(5))), (True, 5)), (mn.Window(4, 0), (True, 5)),
    (mn.And((mn.Causal(), mn.Window(4, 9))), (True, 5)),
    (mn.And((mn.Sliding(5), mn.Window(2, 0))), (True, 3)),
])
def test_mask_pattern(mask, want):
    p = mask_pattern(mask)
    assert (p.causal, p.window) == want


def test_split_scores_order():
    assert split_scores((mn.Softcap(3.0), mn.Alibi())) == (3.0, (mn.Alibi(),))
    assert isinstance(split_scores((mn.Alibi(), mn.Softcap(3.0))), str)
    assert isinstance(split_scores((mn.Softcap(3.0), mn.Softcap(2.0))), str)
