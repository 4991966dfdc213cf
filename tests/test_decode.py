"""The KV-cache decode loop (prefill, then token by token, present fed back as past) equals
one full-sequence run in ONNX Runtime to float32 precision, for every feature a cache meets:
GQA, sliding windows, RoPE, ALiBi, document ids (growing with the sequence), soft-capping,
padding, mask and bias inputs, core mode and chained blocks. The full run is checked against
the numpy reference too, and the cached keys against keys rotated independently."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from helpers import ErrorReport, one_block_yaml
from hypothesis import given, note
from hypothesis import strategies as st
from strategies import SCORE_ITEMS, mask_text

from attndsl.api import parse_spec
from attndsl.errors import AttnDSLError, InputError
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import rope, run_reference
from attndsl.runtime import make_session, run_session
from attndsl.runtime.decode import decode_loop, max_errors, stitch
from attndsl.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
TOL = {"float32": 1e-5, "float16": 2e-3}  # loop vs full run
REF_TOL = {"float32": 1e-5, "float16": 5e-3}  # full run vs the float64 reference
ERRORS = ErrorReport("max abs error, decode loop vs full-sequence run (ONNX Runtime, CPU):",
                     width=56)
_report = ERRORS.fixture()


def head(block: str, *, dtype: str = "float32", inputs: str = "", more: str = "",
         last: str = "attn", cache: bool = True) -> str:
    """A spec whose block ``attn`` (``block``, then ``cache: true``) may feed ``more`` blocks;
    output ``y`` is block ``last``, ``p`` the weights of ``attn``."""
    return one_block_yaml(block + ("\n    cache: true" if cache else ""), name="decode",
                          dtype=dtype, seed=2, dims="  total: dynamic", inputs=inputs,
                          blocks=more, outputs=f"y: {last}\n  p: attn.weights")


CASES = {
    "gqa_sliding_rope": ("    heads: 8\n    kv_heads: 2\n    mask: causal & sliding(4)\n"
                         "    rope: {theta: 10000.0}", ""),
    "mqa_window_partial_rope": ("    heads: 4\n    kv_heads: 1\n    mask: \"window(3, 0)\"\n"
                                "    rope: {theta: 500.0, dim: 4, interleaved: true}", ""),
    "alibi_6_heads": ("    heads: 6\n    head_dim: 4\n    kv_heads: 3\n    mask: causal\n"
                      "    score: [alibi]", ""),
    "documents": ("    heads: 4\n    kv_heads: 2\n    mask: causal & document(ids)\n"
                  "    rope: {theta: 10000.0}",
                  "  ids: {shape: [batch, total], dtype: int64}"),
    "softcap_bias": ("    heads: 4\n    mask: causal\n    score: [softcap(5.0)]\n    bias: true\n"
                     "    scale: 0.9", ""),
    "padding_sinks": ("    heads: 4\n    kv_heads: 2\n    mask: \"causal & padding(lens) & "
                      "(sliding(3) | prefix(2))\"\n    score: [alibi, softcap(20.0)]\n"
                      "    rope: {theta: 10000.0}",
                      "  lens: {shape: [batch], dtype: int64}"),
    "mask_and_bias_inputs": ("    heads: 2\n    mask: causal & mask(m)\n    score: [bias(t)]\n"
                             "    rope: {theta: 10000.0}",
                             "  m: {shape: [batch, 1, seq, total], dtype: bool}\n"
                             "  t: [1, 2, seq, total]"),
    "relative_bias": ("    heads: 4\n    mask: causal\n"
                      "    score: [relative_bias(buckets=8, max_distance=16, "
                      "bidirectional=false)]", ""),
}

CHAINED = """\
  top:
    query: attn
    heads: 4
    kv_heads: 2
    mask: causal & chunk(3)
    score: [softcap(30.0)]
    rope: {theta: 10000.0}
    cache: true"""

CORE = """\
attndsl: 1
name: core
dims: {batch: dynamic, seq: dynamic}
inputs:
  q: [batch, seq, 16]
  k: [batch, seq, 8]
  v: [batch, seq, 12]
blocks:
  core:
    project: false
    query: q
    key: k
    value: v
    heads: 4
    kv_heads: 2
    mask: causal & ~strided(3) | prefix(1)
    rope: {theta: 10000.0}
    cache: true
outputs: {y: core, p: core.weights}
"""


def case_model(name: str, dtype: str = "float32", probs: bool = True):
    """The model of case ``name``; ``probs=False`` drops the ``.weights`` output (which
    keeps a block dense)."""
    if name == "core":
        text = CORE
    elif name == "chained":
        text = head(CASES["gqa_sliding_rope"][0], dtype=dtype, more=CHAINED, last="top")
    else:
        (block, inputs) = CASES[name]
        text = head(block, dtype=dtype, inputs=inputs)
    if not probs:
        text = text.replace("\n  p: attn.weights", "").replace(", p: core.weights", "")
    return parse_spec(text, f"{name}.yaml")


def full_inputs(model, total: int, seed: int = 0) -> dict[str, np.ndarray]:
    return random_inputs(model, {"batch": 2, "seq": total, "total": total}, seed=seed)


def check_loop(name: str, model, prompt_len: int, total: int = 9,
               options: CompileOptions | None = None) -> dict[str, np.ndarray]:
    weights = load_weights(model)
    proto, explain = compile_with_explanations(model, weights, options)
    if options is not None:  # which lowering each block got
        name += f" ({', '.join(e.lowering.split('/')[-1] for e in explain)})"
    inputs = full_inputs(model, total)
    run = decode_loop(model, proto, inputs, prompt_len)
    assert [s for s, _ in run.spans] == ([0] if prompt_len else []) + list(
        range(prompt_len, total))
    errors = max_errors(model, run)
    err = max(errors.values())
    ERRORS.record(f"{name} [{model.dtype}]", err)
    assert err <= TOL[model.dtype], errors
    # the full run itself is right: the numpy reference over the same inputs (empty caches)
    stitched = stitch(model, run)
    want = run_reference(model, weights, inputs)
    for out_name, ref in want.items():
        assert not np.isnan(stitched[out_name]).any(), out_name
        np.testing.assert_allclose(stitched[out_name].astype(np.float64), ref,
                                   atol=REF_TOL[model.dtype], err_msg=out_name)
    return {"inputs": inputs, "weights": weights, "stitched": stitched, "explain": explain}


@pytest.mark.parametrize("prompt_len", [0, 1, 5])
@pytest.mark.parametrize("name", [*CASES, "chained", "core"])
def test_decode_loop_matches_full_sequence(name, prompt_len):
    check_loop(name, case_model(name), prompt_len)


@pytest.mark.parametrize("name", ["gqa_sliding_rope", "mqa_window_partial_rope", "alibi_6_heads",
                                  "documents", "padding_sinks", "chained", "core"])
def test_decode_loop_block_sparse(name):
    """The block-sparse lowerings (tiles of 2 query rows; a decode step is one tile of one
    row) decode like the full sequence too."""
    got = check_loop(name, case_model(name, probs=False), 3,
                     options=CompileOptions(sparse="block", block_size=2))
    if name in ("gqa_sliding_rope", "mqa_window_partial_rope", "chained"):  # bounded bands
        assert got["explain"][0].lowering == "portable/block-sparse band", got["explain"]


@pytest.mark.parametrize("name", ["gqa_sliding_rope", "padding_sinks", "documents"])
def test_decode_loop_float16(name):
    check_loop(name, case_model(name, "float16"), 4)


@pytest.mark.parametrize("name", ["gqa_sliding_rope", "mqa_window_partial_rope", "core"])
def test_present_key_is_keys_after_rope(name):
    """The cache holds the keys after RoPE at their absolute positions, computed here from
    the projection weights and the reference rotation, not from the graph."""
    model = case_model(name)
    got = check_loop(name, model, 3)
    b = model.blocks[0]
    x = got["inputs"][b.key].astype(np.float64)
    if b.project:
        x = x @ got["weights"][f"{b.name}.k_proj.weight"].astype(np.float64).T
    batch, total, _ = x.shape
    k = x.reshape(batch, total, b.kv_heads, b.head_dim).transpose(0, 2, 1, 3)
    k = rope(k, np.arange(total), b.rope.theta, b.rope.dim, b.rope.interleaved)
    np.testing.assert_allclose(got["stitched"][f"{b.name}.present_key"], k, atol=1e-5)


def test_loop_reads_the_cache():
    """Control: steps given caches of the right shape but the wrong contents (zeros) do
    not match the full run, so agreement above really comes from the fed-back cache."""
    model = case_model("gqa_sliding_rope")
    session = make_session(compile_model(model))
    inputs = full_inputs(model, 6)
    full = run_session(session, {**inputs, "attn.past_key": np.zeros((2, 2, 0, 4), np.float32),
                                 "attn.past_value": np.zeros((2, 2, 0, 4), np.float32)})
    zeros = np.zeros((2, 2, 5, 4), np.float32)
    step = run_session(session, {"x": inputs["x"][:, 5:], "attn.past_key": zeros,
                                 "attn.past_value": zeros})
    assert np.abs(step["y"] - full["y"][:, 5:]).max() > 1e-3


def test_documents_need_ids_up_to_the_step():
    """A step at positions [start, end) reads document ids [batch, end] (past and new
    positions); a step given only its own ids is rejected."""
    model = case_model("documents")
    proto = compile_model(model)
    inputs = full_inputs(model, 7, seed=3)
    run = decode_loop(model, proto, inputs, 2)
    assert [s["attn.present_key"].shape[2] for s in run.steps] == [2, 3, 4, 5, 6, 7]
    last = run.steps[-2]
    feed = {"x": inputs["x"][:, 6:], "attn.past_key": last["attn.present_key"],
            "attn.past_value": last["attn.present_value"]}
    session = make_session(proto)
    got = run_session(session, {**feed, "ids": inputs["ids"]})
    np.testing.assert_allclose(got["y"], run.full["y"][:, 6:], atol=1e-6)
    with pytest.raises(InputError):
        run_session(session, {**feed, "ids": inputs["ids"][:, 6:]})


def test_decode_loop_rejects_uncached_and_cross_attention():
    model = parse_spec(head("    heads: 2", cache=False), "x.yaml")
    with pytest.raises(AttnDSLError, match="cache: true"):
        decode_loop(model, compile_model(model), full_inputs(model, 4), 2)
    model = case_model("alibi_6_heads")
    with pytest.raises(AttnDSLError, match="prompt length"):
        decode_loop(model, compile_model(model), full_inputs(model, 4), 5)


def test_example_script(capsys):
    spec = importlib.util.spec_from_file_location("decode_example",
                                                  ROOT / "examples" / "decode_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(ROOT / "examples" / "mistral_block.yaml"), "--tokens", "20",
                        "--prompt-len", "6"]) == 0
    out = capsys.readouterr().out
    assert "14 single-token steps" in out and "OK" in out
    assert module.main([str(ROOT / "examples" / "bert_encoder.yaml")]) == 1


@st.composite
def cached_spec(draw):
    """A cached self-attention spec whose mask never looks ahead (``causal & ...``), with
    random GQA, RoPE, score modifiers and mask / bias / ids / lengths inputs."""
    kv = draw(st.sampled_from([1, 2]))
    heads = kv * draw(st.sampled_from([1, 2, 3]))
    mask = draw(mask_text(heads, inputs=True, max_leaves=4))
    scores = draw(st.lists(st.sampled_from(SCORE_ITEMS), max_size=2, unique=True))
    rope = draw(st.sampled_from(["", "    rope: {theta: 10000.0}\n",
                                 "    rope: {dim: 2, interleaved: true}\n"]))
    used = " ".join([mask, *scores])
    inputs = [line for name, line in (
        ("lengths", "  lengths: {shape: [batch], dtype: int64}"),
        ("doc", "  doc: {shape: [batch, total], dtype: int64}"),
        ("m", "  m: {shape: [batch, 1, seq, total], dtype: bool}"),
        ("tb", "  tb: [1, 1, seq, total]")) if f"({name})" in used]
    block = (f"    heads: {heads}\n    kv_heads: {kv}\n    head_dim: 4\n"
             f"    mask: \"causal & ({mask})\"\n{rope}"
             + (f"    score: [{', '.join(scores)}]" if scores else ""))
    return head(block.rstrip("\n"), inputs="\n".join(inputs))


@given(text=cached_spec(), total=st.integers(1, 10), data=st.data(), seed=st.integers(0, 9))
def test_random_cached_specs_decode_like_full_sequence(text, total, data, seed):
    note(text)
    model = parse_spec(text, "cached.yaml")
    prompt_len = data.draw(st.integers(0, total), label="prompt_len")
    inputs = full_inputs(model, total, seed)
    errors = max_errors(model, decode_loop(model, compile_model(model), inputs, prompt_len))
    assert max(errors.values()) <= TOL["float32"], errors


def test_decode_steps_without_kept_caches():
    """``decode_steps(keep_caches=False)`` (the generation loop the benchmarks time) gives the
    same outputs as ``decode_loop``'s steps and holds only the last step's caches."""
    from attndsl.runtime.decode import decode_steps

    model = case_model("gqa_sliding_rope")
    proto = compile_model(model)
    inputs = full_inputs(model, 7, seed=1)
    run = decode_loop(model, proto, inputs, 3)
    steps, spans = decode_steps(model, make_session(proto), inputs, 3, keep_caches=False)
    assert spans == run.spans
    assert all("attn.present_key" not in s for s in steps[:-1])
    for mine, theirs in zip(steps, run.steps, strict=True):
        for name, value in mine.items():
            np.testing.assert_array_equal(value, theirs[name])
    assert set(steps[-1]) == set(run.steps[-1])
