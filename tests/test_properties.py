"""Property tests (Hypothesis; profile ``ci`` by default, ``HYPOTHESIS_PROFILE=dev`` for more).

1. The effective mask of a compiled graph equals ``eval_mask`` cell for cell, for random mask
   expressions over every primitive, random lengths, past lengths and cross-attention. The
   probe: all queries and keys are zero, so every logit is equal and the probabilities are
   1/count on allowed cells and 0 elsewhere; ``probs > 0`` is the mask.
2. Random whole specs compile, pass the full ONNX checker, survive YAML -> .attn -> YAML with
   equal IR (and the round-tripped IR lowers to the same graph), and match the reference.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from hypothesis import given, note
from hypothesis import strategies as st
from strategies import mask_text, spec_yaml

from attndsl.api import parse_spec
from attndsl.compile import compile_model
from attndsl.convert import convert_text
from attndsl.inputs import random_inputs
from attndsl.masks.eval import eval_mask
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

# ----------------------------------------------------------------------------- mask probe

MODES = ("core", "core_cache", "cross", "cross_cache", "fixed")

CORE = """\
attndsl: 1
name: probe
dtype: {dtype}
dims: {{batch: dynamic, sq: {sq}, sk: {sk}, kt: {kt}}}
inputs:
  q: [batch, sq, {qw}]
  k: [batch, sk, {kw}]
  v: [batch, sk, {kw}]
{inputs}
blocks:
  attn:
    project: false
    query: q
    key: k
    value: v
    heads: {heads}
    kv_heads: {kv}
    mask: "{mask}"
    score: [{score}]
    cache: {cache}
outputs: {{p: attn.weights}}
"""

CROSS = """\
attndsl: 1
name: probe
dtype: {dtype}
dims: {{batch: dynamic, sq: dynamic, sk: dynamic, kt: dynamic}}
inputs:
  x: [batch, sq, 8]
  mem: [batch, sk, 6]
{inputs}
blocks:
  attn:
    query: x
    key_value: mem
    heads: {heads}
    kv_heads: {kv}
    head_dim: 2
    mask: "{mask}"
    score: [{score}]
    cache: {cache}
outputs: {{p: attn.weights}}
"""

# bool mask / bias input shapes: full, per-(q, k) only, per-key only
M_SHAPES = ("[batch, 1, sq, kt]", "[sq, kt]", "[batch, 1, 1, kt]")
# score lists that keep equal logits equal; bias(tb) is 0 or -inf (-inf counts as masked)
SCORES = ("", "bias(tb)", "softcap(5.0), bias(tb)", "softcap(2.0)")
LENGTH = st.one_of(st.integers(1, 7), st.integers(1, 16))


@functools.lru_cache(maxsize=64)
def probe_session(text: str):
    """Model and session for a probe spec (cached: shrinking replays the same specs)."""
    model = parse_spec(text, "probe.yaml")
    weights = load_weights(model)
    if model.blocks[0].project:  # zero queries: every logit is 0
        weights["attn.q_proj.weight"] = np.zeros_like(weights["attn.q_proj.weight"])
    return model, make_session(compile_model(model, weights))


@st.composite
def probe_case(draw):
    mode = draw(st.sampled_from(MODES))
    cross, cache, fixed = mode.startswith("cross"), mode.endswith("cache"), mode == "fixed"
    kv = draw(st.sampled_from([1, 2]))
    heads = kv * draw(st.sampled_from([1, 2]))
    mask = draw(mask_text(heads, inputs=True, random_leaf=fixed, max_leaves=6))
    if cross:
        mask = mask.replace("document(doc)", "causal")  # documents need self-attention
    batch, sq, sk = draw(st.integers(1, 2)), draw(LENGTH), draw(LENGTH)
    past = draw(st.integers(0, 8)) if cache else 0
    if "document(doc)" in mask:  # ids index query positions too: keep past + i < kt
        sq = min(sq, sk)
    kt = past + sk
    inputs = []
    if "padding(lengths)" in mask:
        inputs.append("  lengths: {shape: [batch], dtype: int64}")
    if "document(doc)" in mask:
        inputs.append("  doc: {shape: [batch, kt], dtype: int64}")
    if "mask(m)" in mask:
        inputs.append(f"  m: {{shape: {draw(st.sampled_from(M_SHAPES))}, dtype: bool}}")
    score = draw(st.sampled_from(SCORES))
    if "tb" in score:
        inputs.append(f"  tb: {draw(st.sampled_from(M_SHAPES))}")
    fields = {"inputs": "\n".join(inputs), "heads": heads, "kv": kv, "mask": mask,
              "cache": "true" if cache else "false", "score": score,
              "dtype": draw(st.sampled_from(["float32", "float16"]))}
    if cross:
        text = CROSS.format(**fields)
    else:
        sizes = (sq, sk, kt) if fixed else ("dynamic",) * 3
        text = CORE.format(**fields, sq=sizes[0], sk=sizes[1], kt=sizes[2], qw=2 * heads,
                           kw=2 * kv)
    seed = draw(st.integers(0, 2**16))
    return text, {"batch": batch, "sq": sq, "sk": sk, "kt": kt}, past, seed


def probe_inputs(model, sizes, past, seed) -> dict[str, np.ndarray]:
    """Zero queries and keys, random values; lengths 0..kt+1, unsorted small document ids,
    bool masks of random density."""
    rng = np.random.default_rng(seed)
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    b, kt = sizes["batch"], sizes["kt"]
    for name in ("q", "k", "attn.past_key"):
        if name in feed:
            feed[name] = np.zeros_like(feed[name])
    if "lengths" in feed:
        feed["lengths"] = rng.integers(0, kt + 2, size=b).astype(np.int64)
    if "doc" in feed:
        feed["doc"] = rng.integers(0, 3, size=(b, kt)).astype(np.int64)
    if "m" in feed:
        feed["m"] = rng.random(feed["m"].shape) < rng.uniform(0.2, 0.9)
    if "tb" in feed:
        cut = rng.random(feed["tb"].shape) < rng.uniform(0.0, 0.5)
        feed["tb"] = np.where(cut, -np.inf, 0.0).astype(feed["tb"].dtype)
    return feed


@given(case=probe_case())
def test_compiled_mask_equals_eval_mask(case):
    text, sizes, past, seed = case
    note(text)
    model, session = probe_session(text)
    block = model.blocks[0]
    feed = probe_inputs(model, sizes, past, seed)
    probs = run_session(session, feed)["p"]
    q_pos = (past if block.self_attention else 0) + np.arange(sizes["sq"])
    shape = (sizes["batch"], block.heads, sizes["sq"], sizes["kt"])
    want = np.broadcast_to(
        eval_mask(block.mask, block.heads, q_pos, np.arange(sizes["kt"]), sizes["batch"], feed),
        shape)
    if "tb" in feed:  # bias(t): -inf cells count as masked
        tb = feed["tb"]
        want = want & np.broadcast_to(np.isfinite(tb.reshape((1,) * (4 - tb.ndim) + tb.shape)),
                                      shape)
    assert probs.shape == want.shape
    assert not np.isnan(probs).any()
    bad = np.argwhere((probs > 0) != want)
    assert bad.size == 0, f"{len(bad)} cells differ, first (b, h, i, k) = {bad[0].tolist()}"
    count = want.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(probs.astype(np.float64),
                               np.where(want, 1.0 / np.maximum(count, 1), 0.0),
                               rtol=1e-6 if model.dtype == "float32" else 1e-3, atol=0)


# ----------------------------------------------------------------------------- whole specs


def _graph_bytes(proto: onnx.ModelProto) -> bytes:
    return proto.graph.SerializeToString(deterministic=True)


def check_spec(text: str, sizes: dict[str, int], past: int, seed: int) -> None:
    note(text)
    model = parse_spec(text, "random.yaml")
    weights = load_weights(model)
    proto = compile_model(model, weights)
    onnx.checker.check_model(proto, full_check=True)
    # YAML -> .attn -> YAML: the same IR, lowered to the same graph
    dsl = convert_text(text, "random.yaml", to="dsl")
    note(dsl)
    from_dsl = parse_spec(dsl, "random.attn")
    assert from_dsl == model
    back = convert_text(dsl, "random.attn", to="yaml")
    assert parse_spec(back, "random.yaml") == model
    assert convert_text(back, "random.yaml", to="dsl") == dsl  # the writers are stable
    assert _graph_bytes(compile_model(from_dsl, weights)) == _graph_bytes(proto)
    # ONNX Runtime agrees with the reference interpreter
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    got = run_session(make_session(proto), feed)
    want = run_reference(model, weights, feed)
    assert list(got) == list(want)
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
        assert not np.isnan(got[name]).any(), name
        np.testing.assert_allclose(got[name].astype(np.float64), ref, rtol=0,
                                   atol=TOL[model.dtype], err_msg=name)


TOL = {"float32": 1e-4, "float16": 5e-3}


@given(text=spec_yaml(rich=True, float16=True), batch=st.integers(1, 3), seq=st.integers(1, 9),
       mem=st.integers(1, 9), past=st.integers(0, 4), seed=st.integers(0, 9))
def test_random_specs_round_trip_and_run(text, batch, seq, mem, past, seed):
    check_spec(text, {"batch": batch, "seq": seq, "mem_len": mem}, past, seed)


@given(text=spec_yaml(fixed_lengths=True, rich=True, float16=True), batch=st.integers(1, 2),
       seed=st.integers(0, 9))
def test_random_fixed_length_specs_round_trip_and_run(text, batch, seed):
    check_spec(text, {"batch": batch}, 0, seed)
