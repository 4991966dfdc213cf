"""Multi-head Latent Attention (``mla``, ``attndsl/features/blocks/mla.py``).

- The reference against transformers' ``DeepseekV3Attention`` run in float64 (the ``Float64``
  mode of ``test_feature_kernels.py``), with and without ``q_lora_rank``, ``rope_interleave``
  true and false, the YaRN softmax mscale, attention biases, lengths 1 / 7 / 33, batch 2,
  plain and absorbed: max abs error <= 1e-12; the latent cache against transformers' cache.
- ONNX Runtime against the reference: float32 <= 1e-5, float16 <= 2e-2, dense and the
  block-sparse strategies (band, chunks, tiles), cross-attention; the latent cache (prefill
  then one token at a time equals one full run, through ``attndsl.runtime.decode``);
  absorbed == plain; the ort target (portable fallback, explained).
- Both syntaxes, the round trip, ``attndsl check`` (parameters, FLOPs), the errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ErrorReport, check_against_reference, error_of, one_block_yaml

from attndsl import parse_spec
from attndsl.errors import SpecError
from attndsl.features import kernels as K
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl, write_yaml
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.runtime.decode import decode_loop, max_errors
from attndsl.source import Source
from attndsl.summary import format_summary, summarize
from attndsl.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
ERRORS = ErrorReport("mla max abs error:", width=52)
_report = ERRORS.fixture()
TOL = {"float32": 1e-5, "float16": 2e-2}

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from test_feature_kernels import Float64, _config, _cos_sin_half, _randomise, round_to_float32  # noqa: E402

# DeepSeek shapes scaled down: H 4, dn 12, dr 8, dv 10, kv_lora_rank 24, q_lora_rank 16
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "mscale": 0.7,
        "mscale_all_dim": 0.7, "original_max_position_embeddings": 64, "beta_fast": 32.0,
        "beta_slow": 1.0}


def _mla_block(q_lora: int = 16, interleave: bool = True, absorb: str = "cache",
               yarn: bool = False, extra: str = "", mask: str = "causal") -> str:
    opts = "kv_lora_rank: 24, " + (f"q_lora_rank: {q_lora}, " if q_lora else "")
    opts += (f"qk_nope_head_dim: 12, qk_rope_head_dim: 8, v_head_dim: 10, "
             f"rope_interleave: {str(interleave).lower()}, absorb: {absorb}")
    if yarn:
        opts += ", factor: 4.0, mscale_all_dim: 0.7"
    return (f"    heads: 4\n    head_dim: 20\n    v_head_dim: 10\n    mask: \"{mask}\"\n"
            f"    rope: {{theta: 10000.0, dim: 8}}\n    mla: {{{opts}}}\n{extra}")


def _model(dtype: str = "float32", outputs: str = "y: attn", seq: str = "dynamic", **kw):
    return parse_spec(one_block_yaml(_mla_block(**kw), d=64, dtype=dtype, seq=seq,
                                     outputs=outputs), "t.yaml")


# ------------------------------------------------------------------ against transformers


def _transformers(q_lora, interleave, yarn, seed):
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3Config,
    )

    rp = YARN if yarn else {"rope_type": "default", "rope_theta": 10000.0}
    cfg = _config(DeepseekV3Config, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                  q_lora_rank=q_lora, kv_lora_rank=24, qk_nope_head_dim=12, qk_rope_head_dim=8,
                  v_head_dim=10, rope_interleave=interleave, rope_parameters=rp,
                  attention_bias=True, num_hidden_layers=1, max_position_embeddings=256)
    m = DeepseekV3Attention(cfg, 0)
    _randomise(m, seed)
    return m, round_to_float32(m, "attn.")


def _run_transformers(m, x, pos, allowed, **kw) -> np.ndarray:
    inv = 1.0 / 10000.0 ** (np.arange(0, 8, 2, dtype=np.float64) / 8)
    pe = _cos_sin_half(K.rope_angles(pos, inv))  # the block's RoPE: default frequencies
    mask = torch.from_numpy(np.where(allowed, 0.0, np.finfo(np.float64).min))
    with torch.no_grad(), Float64():
        return m(hidden_states=torch.from_numpy(x), position_embeddings=pe,
                 attention_mask=mask, **kw)[0].numpy()


CASES = [(q, i, y) for q in (0, 16) for i in (True, False) for y in (False, True)]


@pytest.mark.parametrize("q_lora,interleave,yarn", CASES)
@pytest.mark.parametrize("s", (1, 7, 33))
def test_reference_matches_transformers(s, q_lora, interleave, yarn):
    m, w = _transformers(q_lora or None, interleave, yarn, 13 + s)
    rng = np.random.default_rng(s)
    x = rng.standard_normal((2, s, 64))
    pos = np.broadcast_to(np.arange(s), (2, s))
    allowed = np.broadcast_to(np.tril(np.ones((s, s), bool)), (2, 1, s, s))
    want = _run_transformers(m, x, pos, allowed)
    for absorb in ("never", "always"):
        model = _model(q_lora=q_lora, interleave=interleave, yarn=yarn, absorb=absorb,
                       extra="    bias: true\n")
        assert abs(model.block("attn").scale * model.block("attn").feature("mla").mscale ** 2
                   - m.scaling) <= 1e-15
        got = run_reference(model, w, {"x": x})["y"]
        err = float(np.max(np.abs(got - want)))
        ERRORS.record(f"reference vs transformers ({absorb})", err)
        assert err <= 1e-12, (absorb, err)


@pytest.mark.parametrize("q_lora,interleave", [(0, True), (16, False)])
def test_reference_cache_matches_transformers_cache(q_lora, interleave):
    """present_latent / present_rope are what transformers caches (the normalised latent, the
    rotated rope key), and each decode step's output matches its cached forward."""
    from transformers.cache_utils import DynamicCache

    m, w = _transformers(q_lora or None, interleave, False, 40)
    model = _model(q_lora=q_lora, interleave=interleave, extra="    bias: true\n    cache: true\n")
    past, t = 5, 8
    x = np.random.default_rng(41).standard_normal((2, t, 64))
    pos = np.broadcast_to(np.arange(t), (2, t))
    tril = np.tril(np.ones((t, t), bool))[None, None]
    cache = DynamicCache(config=m.config)
    _run_transformers(m, x[:, :past], pos[:, :past], tril[..., :past, :past],
                      past_key_values=cache)
    feed = {"x": x[:, :past], "attn.past_latent": np.zeros((2, 0, 24)),
            "attn.past_rope": np.zeros((2, 0, 8))}
    out = run_reference(model, w, feed)
    layer = cache.layers[0]
    assert np.max(np.abs(out["attn.present_latent"] - layer.keys[:, 0].numpy())) <= 1e-12
    assert np.max(np.abs(out["attn.present_rope"] - layer.values[:, 0].numpy())) <= 1e-12
    for i in range(past, t):
        want = _run_transformers(m, x[:, i:i + 1], pos[:, i:i + 1], tril[..., i:i + 1, :i + 1],
                                 past_key_values=cache)
        feed = {"x": x[:, i:i + 1], "attn.past_latent": out["attn.present_latent"],
                "attn.past_rope": out["attn.present_rope"]}
        out = run_reference(model, w, feed)
        err = float(np.max(np.abs(out["y"] - want)))
        ERRORS.record("reference decode vs transformers cache", err)
        assert err <= 1e-12, err


# ------------------------------------------------------------------ ONNX Runtime vs reference

VARIANTS = {
    "q_lora-interleave": {},
    "q_proj-halves": {"q_lora": 0, "interleave": False},
    "absorbed-yarn": {"absorb": "always", "yarn": True},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_ort_matches_reference(variant, dtype, sparse):
    model = _model(dtype, mask="causal & sliding(8)", **VARIANTS[variant],
                   outputs="y: attn\n  p: attn.weights" if sparse == "dense" else "y: attn")
    proto, explain = compile_with_explanations(model, None,
                                               CompileOptions(sparse=sparse, block_size=4))
    assert explain[0].lowering == ("portable/dense" if sparse == "dense"
                                   else "portable/block-sparse band"), explain
    session = make_session(proto)
    for seq in (1, 7):
        feed = random_inputs(model, {"batch": 2, "seq": seq}, seed=seq)
        err = check_against_reference(model, feed, TOL[dtype], session=session,
                                      where=f"{variant} {dtype} {sparse} seq {seq}")
        ERRORS.record(f"ORT {dtype} {variant}", err)


@pytest.mark.parametrize("absorb", ["cache", "never"])
@pytest.mark.parametrize("mask,kind,seq", [("causal & sliding(8)", "band", "dynamic"),
                                           ("causal", "chunks", "dynamic"),
                                           ("sliding(4) | global(3)", "tiles", "40")])
def test_block_sparse_strategies_with_the_latent(absorb, mask, kind, seq):
    cache = "    cache: true\n" if kind != "tiles" else ""
    model = _model(mask=mask, absorb=absorb if cache else "always", seq=seq, extra=cache)
    proto, explain = compile_with_explanations(model, None,
                                               CompileOptions(sparse="block", block_size=8))
    assert explain[0].lowering == f"portable/block-sparse {kind}", explain
    sizes = {"batch": 2} if kind == "tiles" else {"batch": 2, "seq": 5}
    feed = random_inputs(model, sizes, seed=2, past_len=0 if kind == "tiles" else 9)
    err = check_against_reference(model, feed, 1e-5, session=make_session(proto))
    ERRORS.record(f"ORT float32 block-sparse {kind}", err)


@pytest.mark.parametrize("absorb", ["cache", "never"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cache_prefill_then_steps_equals_full_run(absorb, dtype):
    model = _model(dtype, absorb=absorb, extra="    cache: true\n")
    graph = compile_model(model)
    names = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
             for i in graph.graph.input}
    assert names["attn.past_latent"] == ["batch", "past_len", 24]
    assert names["attn.past_rope"] == ["batch", "past_len", 8]
    assert "attn.past_key" not in names
    inputs = random_inputs(model, {"batch": 2, "seq": 9}, seed=3)
    errors = max_errors(model, decode_loop(model, graph, inputs, prompt_len=4))
    assert set(errors) == {"y", "attn.present_latent", "attn.present_rope"}
    ERRORS.record(f"decode steps vs full run {dtype}", max(errors.values()))
    assert max(errors.values()) <= (1e-5 if dtype == "float32" else 2e-3), errors
    feed = random_inputs(model, {"batch": 2, "seq": 3}, seed=4, past_len=6)
    ERRORS.record(f"ORT {dtype} with cache",
                  check_against_reference(model, feed, TOL[dtype], session=make_session(graph)))


def test_absorbed_equals_plain():
    """One set of weights, the same inputs: the absorbed and the plain form agree (reference
    to 1e-12, ORT to 1e-5), with a cache and without, and both agree with the cacheless run."""
    plain, absorbed = (_model(absorb=a, extra="    cache: true\n") for a in ("never", "always"))
    w = load_weights(plain)
    feed = random_inputs(plain, {"batch": 2, "seq": 4}, seed=5, past_len=7)
    ref = [run_reference(m, w, feed) for m in (plain, absorbed)]
    for name in ref[0]:
        assert np.max(np.abs(ref[0][name] - ref[1][name])) <= 1e-12, name
    outs = [run_session(make_session(compile_model(m, w)), feed) for m in (plain, absorbed)]
    err = max(float(np.max(np.abs(outs[0][n] - outs[1][n]))) for n in outs[0])
    ERRORS.record("ORT absorbed vs plain", err)
    assert err <= 1e-5
    # the graphs differ: the absorbed one never expands the latent per head (no kv_b_proj
    # MatMul over the cache) and attends with one kv head of width kv_lora_rank + dr
    ops = [{n.op_type for n in compile_model(m, w).graph.node if "kv_b_proj" in n.name}
           for m in (plain, absorbed)]
    assert "MatMul" in ops[0] and "MatMul" not in ops[1], ops


def test_cross_attention():
    model = parse_spec(one_block_yaml(
        _mla_block(mask="all").replace("    heads: 4", "    key_value: m\n    heads: 4"), d=64,
        dims="  mem: dynamic", inputs="  m: [batch, mem, d]"), "t.yaml")
    assert model.weight_shapes()["attn.kv_a_proj_with_mqa.weight"] == (32, 64)
    feed = random_inputs(model, {"batch": 2, "seq": 3, "mem": 7}, seed=1)
    ERRORS.record("ORT float32 cross-attention", check_against_reference(model, feed, 1e-5))


def test_ort_target_keeps_the_block_portable_and_says_why():
    model = _model(extra="    cache: true\n")
    _, explain = compile_with_explanations(model, None, CompileOptions(target="ort"))
    assert explain[0].lowering.startswith("portable"), explain
    assert "no fused attention kernel computes multi-head latent attention (mla)" \
        in explain[0].reason
    feed = random_inputs(model, {"batch": 2, "seq": 5}, seed=1, past_len=2)
    check_against_reference(model, feed, 1e-5, options=CompileOptions(target="ort"))


def test_example_spec_runs():
    model = parse_spec((ROOT / "specs" / "mla_deepseek_v3.yaml").read_text(), "m.yaml")
    feed = random_inputs(model, {"batch": 2, "seq": 3}, seed=1, past_len=4)
    check_against_reference(model, feed, 1e-5)


# ------------------------------------------------------------------ IR, syntax, check


def test_weight_shapes():
    lora = _model(extra="    bias: true\n").weight_shapes()
    assert lora == {
        "attn.q_a_proj.weight": (16, 64), "attn.q_a_proj.bias": (16,),
        "attn.q_a_layernorm.weight": (16,), "attn.q_b_proj.weight": (80, 16),
        "attn.kv_a_proj_with_mqa.weight": (32, 64), "attn.kv_a_proj_with_mqa.bias": (32,),
        "attn.kv_a_layernorm.weight": (24,), "attn.kv_b_proj.weight": (88, 24),
        "attn.o_proj.weight": (64, 40), "attn.o_proj.bias": (64,)}
    plain = _model(q_lora=0).weight_shapes()
    assert plain["attn.q_proj.weight"] == (80, 64)
    assert not any(k in plain for k in ("attn.k_proj.weight", "attn.v_proj.weight",
                                        "attn.q_a_proj.weight"))


def test_check_reports_parameters_and_flops():
    model = parse_spec((ROOT / "specs" / "mla_deepseek_v3.yaml").read_text(), "m.yaml")
    summary = summarize(model, {"batch": 1, "seq": 16})
    assert summary.params == (24 * 64 + 24 + 4 * 24 * 24 + 40 * 64 + 32 + 4 * 32 * 32
                              + 64 * 64)
    report = format_summary(summary)
    assert ("    mla    kv_lora_rank 32, q_lora_rank 24, qk 16+8, v 16, absorbed; cache/token "
            "40 values (per-head K/V: 160)") in report
    # q_a + q_b, kv_a, the query and output absorption (16 queries), o_proj
    proj = 2 * 16 * (64 * 24 + 24 * 4 * 24 + 64 * 40 + 4 * 32 * (16 + 16) + 4 * 16 * 64)
    assert summary.blocks[0].proj_flops == proj


def test_both_syntaxes_give_one_model():
    text = one_block_yaml(_mla_block(), d=64)
    dsl = write_dsl(parse_source(Source(text, "t.yaml")))
    assert ("  mla kv_lora_rank = 24, q_lora_rank = 16, qk_nope_head_dim = 12, "
            "qk_rope_head_dim = 8, v_head_dim = 10, rope_interleave = true, absorb = cache") in dsl
    assert parse_spec(dsl, "t.attn") == parse_spec(text, "t.yaml")


@pytest.mark.parametrize("kw", [{}, {"q_lora": 0, "interleave": False, "absorb": "never"},
                                {"yarn": True}])
def test_round_trip_through_both_writers(kw):
    text = one_block_yaml(_mla_block(**kw), d=64)
    spec = parse_source(Source(text, "t.yaml"))
    back = parse_source(Source(write_dsl(spec), "t.attn"))
    assert back == spec
    assert parse_source(Source(write_yaml(back), "t.yaml")) == spec
    # the IR node written back (every option resolved) builds the same model
    from attndsl.ir.build import feature_setting

    model = parse_spec(text, "t.yaml")
    node = model.block("attn").feature("mla")
    opts = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}"
                     for k, v in ((s.key, s.value) for s in feature_setting(node).value))
    again = parse_spec(text.replace(text[text.index("    mla:"):].splitlines()[0],
                                    f"    mla: {{{opts}}}"), "t.yaml")
    assert again == model


# ------------------------------------------------------------------ errors


def _where(err, text: str, needle: str, line_has: str) -> None:
    assert isinstance(err, SpecError)
    assert f"s.yaml:{err.span.line}:{err.span.col}" in str(err) and "^" in str(err)
    for i, line in enumerate(text.splitlines(), 1):
        if line_has in line:
            assert (err.span.line, err.span.col) == (i, line.index(needle) + 1), str(err)
            return
    raise AssertionError(line_has)


ERROR_CASES = {
    "core mode": (lambda b: b + "    project: false\n", "mla:",
                  "mla replaces the block's projections, so it needs project: true",
                  "drop 'project: false'"),
    "gqa": (lambda b: b.replace("    heads: 4\n", "    heads: 4\n    kv_heads: 2\n"), "mla:",
            "mla has one key and value per query head (kv_heads = heads = 4), got kv_heads 2",
            "drop kv_heads"),
    "no rope": (lambda b: b.replace("    rope: {theta: 10000.0, dim: 8}\n", ""), "mla:",
                "mla needs the block's rope", "add rope: {theta: 10000.0, dim: 8}"),
    "rope dim": (lambda b: b.replace("dim: 8}", "dim: 4}"), "rope:",
                 "mla rotates qk_rope_head_dim = 8 features per head", "set rope: {dim: 8}"),
    "rope interleaved": (lambda b: b.replace("dim: 8}", "dim: 8, interleaved: true}"), "rope:",
                         "with mla the block's rope rotates in halves", "rope_interleave"),
    "head_dim": (lambda b: b.replace("head_dim: 20\n", "head_dim: 24\n"), "qk_nope_head_dim",
                 "an mla block's head_dim is qk_nope_head_dim + qk_rope_head_dim = 20, got 24",
                 "set head_dim: 20"),
    "v_head_dim": (lambda b: b.replace("    v_head_dim: 10\n", "    v_head_dim: 12\n"),
                   "v_head_dim: 10, r", "mla v_head_dim 10 differs from the block's v_head_dim 12",
                   "set the block's v_head_dim: 10"),
    "qk_norm": (lambda b: b + "    qk_norm: rms\n", "qk_norm:",
                "mla normalises its own latent; qk_norm does not apply", "drop qk_norm"),
    "no kv_lora_rank": (lambda b: b.replace("kv_lora_rank: 24, ", ""), "mla:",
                        "mla needs kv_lora_rank", "add kv_lora_rank"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_impossible_combinations(case):
    edit, at, message, hint = ERROR_CASES[case]
    text = one_block_yaml(edit(_mla_block()), d=64)
    err = error_of(text, "s.yaml")
    if not isinstance(err, SpecError):  # core mode: the stream widths are wrong too
        err = next(e for e in err.errors if message in str(e))
    assert message in str(err) and hint in str(err), str(err)
    needle = {"mla:": "mla", "rope:": "rope", "qk_norm:": "qk_norm",
              "qk_nope_head_dim": "12, qk_rope", "v_head_dim: 10, r": "10, r"}[at]
    _where(err, text, needle, at if at != "qk_nope_head_dim" else "mla:")


def test_option_errors():
    err = error_of(one_block_yaml(_mla_block().replace("absorb: cache", "absorb: cahce"), d=64),
                   "s.yaml")
    assert "mla absorb must be one of cache, always, never, got 'cahce'" in str(err)
    assert "did you mean 'cache'" in str(err)
    err = error_of(one_block_yaml(_mla_block().replace("kv_lora_rank", "kv_rank"), d=64),
                   "s.yaml")
    assert "unknown mla key 'kv_rank'" in str(err) and "did you mean 'kv_lora_rank'" in str(err)
    block = _mla_block()
    mla_line = next(line for line in block.splitlines() if line.startswith("    mla:"))
    err = error_of(one_block_yaml(block.replace(mla_line, "    mla: true"), d=64), "s.yaml")
    assert "mla must be a mapping like {kv_lora_rank: 512, q_lora_rank: 1536}" in str(err)
