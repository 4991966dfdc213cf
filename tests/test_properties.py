"""Property tests (Hypothesis; profile ``ci`` by default, ``HYPOTHESIS_PROFILE=dev`` for more).

1. The effective mask of a compiled graph equals ``eval_mask`` cell for cell, for random mask
   expressions over every primitive, random lengths, past lengths, cross-attention, bool mask
   and -inf bias inputs, float16, and every lowering strategy (dense, block-sparse band /
   chunks / tiles). The probe: all queries and keys are zero, so every logit is equal and
   a query's probabilities are 1/count on its allowed keys and 0 elsewhere; one-hot values
   copy them into the block output, and ``.weights`` (when an output) holds them too.
2. Random whole specs (chains, cross-attention, core mode, float16, every mask primitive and
   score modifier) compile under every strategy, pass the full ONNX checker, survive
   YAML -> .attn -> YAML with equal IR (the round-tripped IR lowers to the same graph) and
   match the reference interpreter.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from helpers import check_against_reference
from hypothesis import given, note, settings
from hypothesis import strategies as st
from strategies import mask_text, spec_yaml

from attndsl.api import parse_spec
from attndsl.convert import convert_text
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.masks.eval import eval_mask
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

# ----------------------------------------------------------------------------- mask probe

MODES = ("core", "core_cache", "cross", "cross_cache", "fixed")
DV = 24  # value width: one feature per key position (max key length 16 + past 8)

CORE = """\
attndsl: 1
name: probe
dtype: {dtype}
dims: {{batch: dynamic, sq: {sq}, sk: {sk}, kt: {kt}}}
inputs:
  q: [batch, sq, {qw}]
  k: [batch, sk, {kw}]
  v: [batch, sk, {vw}]
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
outputs:
{outputs}
"""

CROSS = """\
attndsl: 1
name: probe
dtype: {dtype}
dims: {{batch: dynamic, sq: dynamic, sk: dynamic, kt: dynamic}}
inputs:
  x: [batch, sq, 8]
  mem: [batch, sk, {dv}]
{inputs}
blocks:
  attn:
    query: x
    key_value: mem
    heads: {heads}
    kv_heads: {kv}
    head_dim: 2
    v_head_dim: {dv}
    out_dim: {ow}
    mask: "{mask}"
    score: [{score}]
    cache: {cache}
outputs:
{outputs}
"""

# bool mask / bias input shapes (broadcast to [batch, heads, sq, kt]); H: the block's heads,
# kt: the total key length (a dim of its own with a cache, else the keys' dim sk)
M_SHAPES = ("[batch, 1, sq, kt]", "[batch, H, sq, kt]", "[sq, kt]", "[batch, 1, 1, kt]",
            "[kt]", "[1, sq, kt]", "[H, 1, kt]")
# score lists that keep equal logits equal; bias(tb) is 0 or -inf (-inf counts as masked)
SCORES = ("", "bias(tb)", "softcap(5.0), bias(tb)", "softcap(2.0)")
LENGTH = st.one_of(st.integers(1, 7), st.integers(1, 16))
# lowering strategies: (--sparse, --block-size); a .weights output keeps a block dense
SPARSE = (("dense", None), ("auto", None), ("auto", 2), ("block", None), ("block", 1),
          ("block", 2), ("block", 3), ("block", 4))


@functools.lru_cache(maxsize=64)
def probe_session(text: str, sparse: str, block_size: int | None):
    """Model, session and the lowering chosen, for a probe spec (cached: shrinking replays
    the same specs). Projected probes get zero query weights (every logit is 0), values that
    copy the one-hot memory rows and an identity output projection."""
    model = parse_spec(text, "probe.yaml")
    weights = load_weights(model)
    b = model.blocks[0]
    if b.project:
        weights["attn.q_proj.weight"] = np.zeros_like(weights["attn.q_proj.weight"])
        weights["attn.v_proj.weight"] = np.tile(np.eye(DV, dtype=np.float32), (b.kv_heads, 1))
        weights["attn.o_proj.weight"] = np.eye(b.heads * DV, dtype=np.float32)
    options = CompileOptions(sparse=sparse, block_size=block_size)
    proto, explain = compile_with_explanations(model, weights, options)
    return model, make_session(proto), explain


# bounded offset bands (and chunks) that make a block-sparse plan apply; "" for tile lists
BANDS = st.one_of(st.just("causal"), st.just(""),
                  st.builds("sliding({})".format, st.integers(1, 6)),
                  st.builds("window({}, {})".format, st.integers(0, 5), st.integers(0, 5)),
                  st.builds("chunk({})".format, st.integers(1, 6)),
                  st.builds("dilated({}, 0, {})".format, st.integers(0, 8), st.integers(1, 3)))


@st.composite
def probe_case(draw, sparse_only: bool = False):
    """(spec text, (sparse, block size), sizes, past_len, seed). ``sparse_only``: specs a
    block-sparse lowering applies to (a bounded band, no .weights / mask / bias inputs)."""
    mode = draw(st.sampled_from(MODES + ("fixed",) * 2 if sparse_only else MODES))
    cross, cache, fixed = mode.startswith("cross"), mode.endswith("cache"), mode == "fixed"
    kv = draw(st.sampled_from([1, 2]))
    heads = kv * draw(st.sampled_from([1, 2, 4]))
    mask = draw(mask_text(heads, inputs=True, random_leaf=fixed, max_leaves=6))
    if cross:
        mask = mask.replace("document(doc)", "causal")  # documents need self-attention
    if sparse_only:
        band = draw(BANDS)
        mask = mask.replace("mask(m)", "causal")
        mask = f"{band} & ({mask})" if band else mask
        if fixed and draw(st.integers(0, 2)):  # BigBird-like: tile lists (static lengths)
            mask = (f"random({draw(st.integers(1, 2))}, block={draw(st.integers(1, 4))}, "
                    f"seed={draw(st.integers(0, 9))}) | ({mask})")
    batch, sq, sk = draw(st.integers(1, 2)), draw(LENGTH), draw(LENGTH)
    past = draw(st.integers(0, 8)) if cache else 0
    if "document(doc)" in mask:  # ids index query positions too: keep past + i < kt
        sq = min(sq, sk)
    kt = past + sk
    k_dim = "kt" if cache else "sk"  # the total key length: past + new keys
    inputs = []
    if "padding(lengths)" in mask:
        inputs.append("  lengths: {shape: [batch], dtype: int64}")
    if "document(doc)" in mask:
        inputs.append(f"  doc: {{shape: [batch, {k_dim}], dtype: int64}}")
    if "mask(m)" in mask:
        shape = draw(st.sampled_from(M_SHAPES)).replace("H", str(heads)).replace("kt", k_dim)
        inputs.append(f"  m: {{shape: {shape}, dtype: bool}}")
    score = draw(st.sampled_from(SCORES[-1:] if sparse_only else SCORES))
    if "tb" in score:
        shape = draw(st.sampled_from(M_SHAPES)).replace("H", str(heads)).replace("kt", k_dim)
        inputs.append(f"  tb: {shape}")
    outputs = "  y: attn" + ("\n  p: attn.weights"
                             if not sparse_only and draw(st.booleans()) else "")
    fields = {"inputs": "\n".join(inputs), "heads": heads, "kv": kv, "mask": mask,
              "cache": "true" if cache else "false", "score": score, "outputs": outputs,
              "dtype": draw(st.sampled_from(["float32", "float16"]))}
    if cross:
        text = CROSS.format(**fields, dv=DV, ow=heads * DV)
    else:
        sizes = (sq, sk, kt) if fixed else ("dynamic",) * 3
        text = CORE.format(**fields, sq=sizes[0], sk=sizes[1], kt=sizes[2], qw=2 * heads,
                           kw=2 * kv, vw=DV * kv)
    seed = draw(st.integers(0, 2**16))
    strategy = draw(st.sampled_from(SPARSE[3:] if sparse_only else SPARSE))
    return text, strategy, {"batch": batch, "sq": sq, "sk": sk, "kt": kt}, past, seed


def probe_inputs(model, sizes, past, seed) -> dict[str, np.ndarray]:
    """Zero queries and keys; one-hot values (key k's value is feature k of its kv head);
    lengths 0..kt+1, unsorted small document ids, bool masks of random density, bias 0 or
    -inf."""
    rng = np.random.default_rng(seed)
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    b, kt, sk = sizes["batch"], sizes["kt"], sizes["sk"]
    for name in ("q", "k", "attn.past_key"):
        if name in feed:
            feed[name] = np.zeros_like(feed[name])
    eye = np.eye(DV, dtype=model.dtype)
    if "v" in feed:  # core mode: [batch, sk, G * DV]
        feed["v"] = np.broadcast_to(np.tile(eye[past:past + sk], model.blocks[0].kv_heads),
                                    feed["v"].shape).copy()
    if "mem" in feed:  # projected: v_proj copies the memory row
        feed["mem"] = np.broadcast_to(eye[past:past + sk], feed["mem"].shape).copy()
    if "attn.past_value" in feed:
        feed["attn.past_value"] = np.broadcast_to(eye[:past], feed["attn.past_value"].shape
                                                  ).copy()
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


# the cheapest and most telling properties: three times the profile's example count each
@settings(max_examples=3 * settings.default.max_examples)
@given(case=probe_case())
def test_compiled_mask_equals_eval_mask(case):
    check_probe(case)


@settings(max_examples=3 * settings.default.max_examples)
@given(case=probe_case(sparse_only=True))
def test_block_sparse_mask_equals_eval_mask(case):
    check_probe(case)


def check_probe(case) -> None:
    """Every logit is 0, so a query's probabilities are 1/count on its allowed keys; the
    one-hot values copy them into the block output (feature k of head h = probability of key
    k), which the block-sparse lowerings compute too. ``.weights``, when an output, too."""
    text, (sparse, block_size), sizes, past, seed = case
    note(text)
    model, session, explain = probe_session(text, sparse, block_size)
    note(f"--sparse {sparse} --block-size {block_size}: {explain[0].lowering}")
    block = model.blocks[0]
    feed = probe_inputs(model, sizes, past, seed)
    got = run_session(session, feed)
    b, h, sq, kt = sizes["batch"], block.heads, sizes["sq"], sizes["kt"]
    from_y = got["y"].astype(np.float64).reshape(b, sq, h, DV).transpose(0, 2, 1, 3)
    assert not from_y[..., kt:].any()
    probs = {"y": from_y[..., :kt]}
    if "p" in got:
        probs["p"] = got["p"].astype(np.float64)
    q_pos = (past if block.self_attention else 0) + np.arange(sq)
    want = np.broadcast_to(
        eval_mask(block.mask, h, q_pos, np.arange(kt), b, feed), (b, h, sq, kt))
    if "tb" in feed:  # bias(t): -inf cells count as masked
        tb = feed["tb"]
        want = want & np.broadcast_to(np.isfinite(tb.reshape((1,) * (4 - tb.ndim) + tb.shape)),
                                      want.shape)
    count = want.sum(axis=-1, keepdims=True)
    expect = np.where(want, 1.0 / np.maximum(count, 1), 0.0)
    for name, p in probs.items():
        assert p.shape == want.shape, name
        assert not np.isnan(p).any(), name
        bad = np.argwhere((p > 0) != want)
        assert bad.size == 0, (f"{name}: {len(bad)} cells differ, first (b, h, i, k) = "
                               f"{bad[0].tolist()}")
        np.testing.assert_allclose(p, expect, rtol=1e-6 if model.dtype == "float32" else 1e-3,
                                   atol=0, err_msg=name)


# ----------------------------------------------------------------------------- whole specs


def _graph_bytes(proto: onnx.ModelProto) -> bytes:
    return proto.graph.SerializeToString(deterministic=True)


def check_spec(text: str, sizes: dict[str, int], past: int, seed: int,
               strategy: tuple[str, int | None], probs: bool) -> None:
    """Compile (with the block-sparse ``strategy``; without the ``.weights`` output unless
    ``probs``, since it keeps its block dense), check, round-trip and run ``text``."""
    if not probs:
        text = text.replace("  p: attn.weights\n", "")
    note(text)
    model = parse_spec(text, "random.yaml")
    weights = load_weights(model)
    options = CompileOptions(sparse=strategy[0], block_size=strategy[1])
    proto, explain = compile_with_explanations(model, weights, options)
    note(f"--sparse {strategy[0]} --block-size {strategy[1]}: "
         f"{', '.join(e.lowering for e in explain)}")
    onnx.checker.check_model(proto, full_check=True)
    # YAML -> .attn -> YAML: the same IR, lowered to the same graph
    dsl = convert_text(text, "random.yaml", to="dsl")
    note(dsl)
    from_dsl = parse_spec(dsl, "random.attn")
    assert from_dsl == model
    back = convert_text(dsl, "random.attn", to="yaml")
    assert parse_spec(back, "random.yaml") == model
    assert convert_text(back, "random.yaml", to="dsl") == dsl  # the writers are stable
    again = compile_model(from_dsl, weights, options=options)
    assert _graph_bytes(again) == _graph_bytes(proto)
    # ONNX Runtime agrees with the reference interpreter
    feed = random_inputs(model, sizes, seed=seed, past_len=past)
    check_against_reference(model, feed, TOL[model.dtype], session=make_session(proto),
                            weights=weights)


TOL = {"float32": 1e-4, "float16": 5e-3}


@settings(max_examples=2 * settings.default.max_examples)
@given(text=spec_yaml(rich=True, float16=True), batch=st.integers(1, 3), seq=st.integers(1, 9),
       mem=st.integers(1, 9), past=st.integers(0, 4), seed=st.integers(0, 9),
       strategy=st.sampled_from(SPARSE), probs=st.booleans())
def test_random_specs_round_trip_and_run(text, batch, seq, mem, past, seed, strategy, probs):
    check_spec(text, {"batch": batch, "seq": seq, "mem_len": mem}, past, seed, strategy, probs)


@settings(max_examples=2 * settings.default.max_examples)
@given(text=spec_yaml(fixed_lengths=True, rich=True, float16=True), batch=st.integers(1, 2),
       seed=st.integers(0, 9), strategy=st.sampled_from(SPARSE), probs=st.booleans())
def test_random_fixed_length_specs_round_trip_and_run(text, batch, seed, strategy, probs):
    check_spec(text, {"batch": batch}, 0, seed, strategy, probs)
