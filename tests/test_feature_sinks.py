"""Attention sinks (``sinks``, ``attndsl/features/blocks/sinks.py``).

- The reference against transformers' ``GptOssAttention`` (eager path, the definition) run in
  float64 (the ``Float64`` mode of ``test_feature_kernels.py``): causal, causal & sliding
  window, fully masked rows (padding 0), the constant form as a zero sink; max abs error
  <= 1e-12.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2; lengths 1, 7 (and
  20), batch 2, GQA / MQA, cross-attention, core mode, the dense path and the band, chunks and
  tiles strategies, the KV cache (prefill then one token at a time equals one full run), the
  ort target (GroupQueryAttention's head_sink / smooth_softmax, else the portable fallback
  with its reason).
- Both syntaxes, the round trip through the writers, ``attndsl check``, the errors.
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
    run_both,
)

from attndsl import parse_spec
from attndsl.errors import SpecError
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime import make_session
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("sinks max abs error:", width=52)
_report = ERRORS.fixture()
TOL = {"float32": 1e-5, "float16": 2e-2}
LEN = "  len: {shape: [batch], dtype: int64}"
GQA = "com.microsoft.GroupQueryAttention"

# ------------------------------------------------------------------ against transformers

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _config, _randomise, round_to_float32  # noqa: E402


def _gpt_oss(seed: int, zero_sinks: bool = False):
    """A gpt-oss attention layer (4 heads, 2 kv heads, head_dim 16, biases) with random
    parameters rounded to float32 (as the reference rounds a float32 model's weights)."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssConfig

    cfg = _config(GptOssConfig, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, num_hidden_layers=2, attention_bias=True)
    m = GptOssAttention(cfg, 1)
    _randomise(m, seed)
    if zero_sinks:
        with torch.no_grad():
            m.sinks.zero_()
    return m, round_to_float32(m, "attn.")


def _gpt_oss_spec(mask: str, kind: str = "learned", inputs: str = "") -> str:
    return one_block_yaml(f"    heads: 4\n    kv_heads: 2\n    head_dim: 16\n    bias: true\n"
                          f"    mask: {mask}\n    rope: {{theta: 150000.0}}\n"
                          f"    sinks: {kind}\n", d=64, inputs=inputs)


def _vs_gpt_oss(module, w, spec: str, allowed: np.ndarray, feed: dict, name: str) -> None:
    x = feed["x"]
    b, s = x.shape[:2]
    ang = np.arange(s)[:, None] * (1.0 / 150000.0 ** (np.arange(0, 16, 2) / 16))[None, :]
    pe = (torch.from_numpy(np.broadcast_to(np.cos(ang), (b, s, 8)).copy()),
          torch.from_numpy(np.broadcast_to(np.sin(ang), (b, s, 8)).copy()))
    mask = np.where(allowed, 0.0, np.finfo(np.float64).min)
    with torch.no_grad(), Float64():
        want = module(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                      attention_mask=torch.from_numpy(mask))[0].numpy()
    got = run_reference(parse_spec(spec, "t.yaml"), w, feed)["y"]
    err = float(np.max(np.abs(got - want)))
    ERRORS.record(f"vs transformers GptOss {name}", err)
    assert err <= 1e-12, (name, err)


@pytest.mark.parametrize("s", (1, 7, 33))
@pytest.mark.parametrize("window", (None, 4))
def test_reference_matches_gpt_oss(s, window):
    m, w = _gpt_oss(7 + s)
    x = np.random.default_rng(s).standard_normal((2, s, 64))
    q, k = np.arange(s)[:, None], np.arange(s)[None, :]
    allowed = (k <= q) if window is None else (k <= q) & (q - k < window)
    mask = "causal" if window is None else f"causal & sliding({window})"
    _vs_gpt_oss(m, w, _gpt_oss_spec(mask), np.broadcast_to(allowed, (2, 1, s, s)), {"x": x},
                mask)


def test_reference_matches_gpt_oss_on_fully_masked_rows():
    """padding 0 masks every key of batch 0: the sink takes all the mass, the attention
    output is 0 and the layer outputs o_proj's bias."""
    m, w = _gpt_oss(3)
    s = 9
    lens = np.array([0, 5])
    x = np.random.default_rng(1).standard_normal((2, s, 64))
    q, k = np.arange(s)[:, None], np.arange(s)[None, :]
    allowed = (k <= q)[None, None] & (k[None, None] < lens[:, None, None, None])
    spec = _gpt_oss_spec("causal & padding(len)", inputs=LEN)
    _vs_gpt_oss(m, w, spec, allowed, {"x": x, "len": lens}, "fully masked rows")
    out = run_reference(parse_spec(spec, "t.yaml"), w, {"x": x, "len": lens})["y"]
    assert np.array_equal(out[0], np.broadcast_to(w["attn.o_proj.bias"], (s, 64)))


def test_constant_is_gpt_oss_with_zero_sinks():
    m, w = _gpt_oss(5, zero_sinks=True)
    del w["attn.sinks"]
    s = 7
    x = np.random.default_rng(2).standard_normal((2, s, 64))
    allowed = np.broadcast_to(np.tril(np.ones((s, s), bool)), (2, 1, s, s))
    _vs_gpt_oss(m, w, _gpt_oss_spec("causal", "constant"), allowed, {"x": x},
                "constant (zero sinks)")


# ------------------------------------------------------------------ ONNX Runtime vs reference


def _model(kind: str = "learned", dtype: str = "float32", extra: str = "",
           mask: str = "causal & sliding(8)", heads: str = "heads: 4\n    kv_heads: 2",
           outputs: str = "y: attn", seq: str | int = "dynamic"):
    return one_block(f"    {heads}\n    head_dim: 16\n    mask: {mask}\n    rope: true\n"
                     f"    sinks: {kind}\n{extra}", dtype=dtype, outputs=outputs, d=64, seq=seq)


def _lowering(model, options: CompileOptions) -> str:
    _, explain = compile_with_explanations(model, None, options)
    return explain[0].lowering


@pytest.mark.parametrize("kind", ["learned", "constant"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(kind, dtype, sparse):
    # dense: the probabilities are an output too (rows sum to less than 1)
    model = _model(kind, dtype, outputs="y: attn\n  p: attn.weights" if sparse == "dense"
                   else "y: attn")
    options = CompileOptions(sparse=sparse, block_size=4)
    assert _lowering(model, options) == ("portable/dense" if sparse == "dense"
                                         else "portable/block-sparse band")
    session = make_session(compile_model(model, None, options=options))
    for seq in (1, 7, 20):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], session=session,
                                      where=f"{kind} {dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype} {sparse}", err)


@pytest.mark.parametrize("mask,seq,strategy", [
    ("causal", "dynamic", "chunks"),
    ("window(8, 8) | global(0) | random(1, block=8, seed=1)", 64, "tiles"),
    ("causal & padding(len)", "dynamic", "chunks"),
])
def test_block_sparse_strategies(mask, seq, strategy):
    model = one_block(f"    heads: 4\n    kv_heads: 2\n    head_dim: 16\n    mask: {mask}\n"
                      "    sinks: true\n", d=64, seq=seq,
                      inputs=LEN if "len" in mask else "")
    options = CompileOptions(sparse="block", block_size=8)
    assert _lowering(model, options) == f"portable/block-sparse {strategy}"
    session = make_session(compile_model(model, None, options=options))
    for n in ((64,) if seq == 64 else (1, 7, 20)):
        feed = random_inputs(model, {"batch": 2, "seq": n}, seed=n)
        if "len" in feed:
            feed["len"] = np.array([0, max(n - 3, 1)], feed["len"].dtype)  # batch 0: no keys
        err = check_against_reference(model, feed, 1e-5, session=session,
                                      where=f"{strategy} seq {n}")
        ERRORS.record(f"ORT float32 block-sparse {strategy}", err)
        if "len" in feed:  # the fully masked rows: the sink takes everything, output o_proj.b
            got, _ = run_both(model, feed, session=session)
            assert np.allclose(got["y"][0], got["y"][0, :1], atol=0), "rows of batch 0 differ"


@pytest.mark.parametrize("kind", ["learned", "constant"])
@pytest.mark.parametrize("target", ["portable", "ort"])
def test_cache_prefill_then_steps_equals_full_run(kind, target):
    model = _model(kind, extra="    cache: true\n")
    # the ort target with --sparse dense: GroupQueryAttention's decode (under auto the cost
    # model serves cached blocks portable, faster on CPU)
    options = CompileOptions(target=target, sparse="dense" if target == "ort" else "auto")
    assert _lowering(model, options) == (GQA if target == "ort"
                                         else "portable/block-sparse band")
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    proto = compile_model(model, None, options=options)
    errors = max_errors(model, decode_loop(model, proto, inputs, prompt_len=4))
    assert max(errors.values()) <= 1e-5, errors
    ERRORS.record(f"decode steps vs full run ({target})", max(errors.values()))
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=4, past_len=3)
    err = check_against_reference(model, feed, 1e-5, session=make_session(proto))
    ERRORS.record(f"ORT float32 with cache ({target})", err)


@pytest.mark.parametrize("kind", ["learned", "constant"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mask", ["causal", "causal & sliding(8)"])
def test_ort_target_maps_onto_group_query_attention(kind, dtype, mask):
    """ORT 1.32's GroupQueryAttention computes the sink softmax: head_sink (learned, in the
    model dtype) or smooth_softmax (constant); prefill (dense: the window is kept fused) and
    decode steps with a cache."""
    for cache in (False, True):
        model = _model(kind, dtype, mask=mask, extra="    cache: true\n" if cache else "")
        options = CompileOptions(target="ort", sparse="dense")
        assert _lowering(model, options) == GQA
        proto = compile_model(model, None, options=options)
        node = next(n for n in proto.graph.node if n.op_type == "GroupQueryAttention")
        if kind == "learned":
            assert node.input[11] == "attn.sinks"
        else:
            assert [a.i for a in node.attribute if a.name == "smooth_softmax"] == [1]
        session = make_session(compile_model(model, None, options=options))
        for seq in (1, 7, 20):
            feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq,
                                 past_len=5 if cache else 0)
            err = check_against_reference(model, feed, TOL[dtype], session=session,
                                          where=f"GQA {kind} {dtype} {mask} cache {cache}")
            ERRORS.record(f"ORT {dtype} GroupQueryAttention", err)


def test_ort_target_falls_back_with_the_reason():
    cases = {
        "none": "attention sinks (only GroupQueryAttention has a sink input)",
        "causal & padding(len)": "mask padding(len) has no GroupQueryAttention input",
    }
    for mask, reason in cases.items():
        model = one_block(f"    heads: 4\n    head_dim: 16\n    mask: {mask}\n    sinks: true\n",
                          d=64, inputs=LEN if "len" in mask else "")
        _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
        assert explain[0].lowering.startswith("portable"), explain
        assert reason in explain[0].reason, explain[0].reason
        feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1)
        check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


def test_mqa_and_cross_attention():
    mqa = _model(heads="heads: 4\n    kv_heads: 1")
    feed = random_inputs(mqa, {"batch": 2, "seq": 7}, seed=1)
    ERRORS.record("ORT float32 MQA", check_against_reference(mqa, feed, 1e-5))
    for kind in ("learned", "constant"):
        cross = parse_spec(one_block_yaml(
            f"    key_value: m\n    heads: 4\n    kv_heads: 2\n    sinks: {kind}\n",
            dims="  mem: dynamic", inputs="  m: [batch, mem, d]"), "t.yaml")
        for mem in (1, 7):
            feed = random_inputs(cross, {"batch": 2, "seq": 3, "mem": mem}, seed=mem)
            err = check_against_reference(cross, feed, 1e-5,
                                          options=CompileOptions(target="ort"))
            ERRORS.record("ORT float32 cross-attention", err)


def test_core_mode_constant_and_rows_sum_below_one():
    model = parse_spec(one_block_yaml("    project: false\n    heads: 4\n    mask: causal\n"
                                      "    sinks: constant\n",
                                      outputs="y: attn\n  p: attn.weights"), "t.yaml")
    assert model.weight_shapes() == {}
    feed = random_inputs(model, {"batch": 2, "seq": 6}, seed=2)
    check_against_reference(model, feed, 1e-5)
    p = run_reference(model, {}, feed)["p"]
    x = feed["x"].astype(np.float64).reshape(2, 6, 4, 8).transpose(0, 2, 1, 3)
    s = np.einsum("bhqd,bhkd->bhqk", x, x) / np.sqrt(8)
    e = np.where(np.tril(np.ones((6, 6), bool)), np.exp(s), 0.0)
    assert np.max(np.abs(p - e / (1.0 + e.sum(-1, keepdims=True)))) <= 1e-12  # softmax + 1
    assert (p.sum(-1) < 1).all()


def test_sinks_change_the_output():
    with_sinks = _model()
    without = one_block("    heads: 4\n    kv_heads: 2\n    head_dim: 16\n"
                        "    mask: causal & sliding(8)\n    rope: true\n", d=64)
    feed = random_inputs(with_sinks, {"batch": 1, "seq": 6}, seed=2)
    base = {k: np.full(v, 0.05) for k, v in without.weight_shapes().items()}
    a = run_reference(with_sinks, {**base, "attn.sinks": np.zeros(4)}, feed)["y"]
    b = run_reference(without, base, feed)["y"]
    assert not np.allclose(a, b)
    huge = run_reference(with_sinks, {**base, "attn.sinks": np.full(4, 80.0)}, feed)["y"]
    assert np.abs(huge).max() < 1e-20  # (almost) all the mass on the sink: output ~ 0


# ------------------------------------------------------------------ IR, syntax, check


def test_weights_and_ir_text():
    assert _model().weight_shapes()["attn.sinks"] == (4,)
    assert "attn.sinks" not in _model("constant").weight_shapes()
    assert "    sinks kind=learned\n" in print_ir(_model())
    assert "    sinks kind=constant\n" in print_ir(_model("constant"))


def test_both_syntaxes_give_one_model():
    yaml_model = parse_spec(one_block_yaml("    heads: 4\n    sinks: {kind: constant}\n"),
                            "t.yaml")
    dsl = """attndsl 1
model t
seed 0
dims batch = dynamic, seq = dynamic, d = 32
input x: [batch, seq, d]
block attn = attention(query = x) {
  heads 4
  sinks kind = constant
}
output y = attn
"""
    assert parse_spec(dsl, "t.attn") == yaml_model
    assert parse_spec(dsl.replace("sinks kind = constant", "sinks constant"),
                      "t.attn") == yaml_model
    bare = parse_spec(dsl.replace("sinks kind = constant", "sinks"), "t.attn")
    assert bare.block("attn").feature("sinks").kind == "learned"


@pytest.mark.parametrize("value", ["true", "learned", "constant", "{kind: learned}"])
def test_round_trip_through_both_writers(value):
    text = one_block_yaml(f"    heads: 4\n    rope: true\n    sinks: {value}\n")
    assert_round_trips(text)


def test_check_reports_the_feature():
    model = parse_spec((ROOT / "specs" / "sinks_gpt_oss.yaml").read_text(), "g.yaml")
    report = format_summary(summarize(model, {"seq": 16}))
    assert "    sinks  learned sink logit per head, weight [8]" in report
    constant = format_summary(summarize(_model("constant"), {"seq": 16}))
    assert "    sinks  constant sink logit 0 (softmax plus one)" in constant
    plain = parse_spec(one_block_yaml("    heads: 4\n"), "t.yaml")
    assert "sinks" not in format_summary(summarize(plain, {"seq": 16}))


# ------------------------------------------------------------------ errors


def _where(err, path: str = "s.yaml") -> tuple[int, int]:
    assert f"{path}:{err.span.line}:{err.span.col}" in str(err)
    assert "^" in str(err)
    return err.span.line, err.span.col


def test_errors():
    text = one_block_yaml("    heads: 4\n    sinks: {kind: lerned}\n")
    err = error_of(text, "s.yaml")
    assert isinstance(err, SpecError)
    assert "sinks kind must be one of learned, constant, got 'lerned'" in str(err)
    assert "did you mean 'learned'" in str(err)
    line = text.splitlines().index("    sinks: {kind: lerned}") + 1
    assert _where(err) == (line, len("    sinks: {kind: ") + 1)
    unknown = error_of(one_block_yaml("    heads: 4\n    sinks: {logit: 0}\n"), "s.yaml")
    assert "unknown sinks key 'logit'" in str(unknown)
    short = error_of(one_block_yaml("    heads: 4\n    sinks: zero\n"), "s.yaml")
    assert "sinks must be a mapping like {kind: learned}" in str(short)
    core_text = one_block_yaml("    project: false\n    heads: 4\n    sinks: true\n")
    core = error_of(core_text, "s.yaml")
    assert "learned sinks are a weight (<block>.sinks)" in str(core)
    assert "use 'sinks: constant'" in str(core)
    line = core_text.splitlines().index("    sinks: true") + 1
    assert _where(core)[0] == line


def test_dsl_error_has_a_position():
    dsl = write_dsl(parse_source(Source(one_block_yaml("    heads: 4\n"), "t.yaml"))).replace(
        "  heads 4", "  heads 4\n  sinks kind = constnt")
    err = error_of(dsl, "s.attn")
    assert "did you mean 'constant'" in str(err)
    assert dsl.splitlines()[err.span.line - 1][err.span.col - 1:].startswith("constnt")
