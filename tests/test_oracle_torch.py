"""PyTorch as an independent oracle for the reference interpreter (and the emitted ONNX).

Every torch-side computation here is written from torch primitives and from the published
formulas (Hugging Face Llama / GPT-NeoX / GPT-J RoPE, BLOOM ALiBi slopes, HF T5 buckets,
SDPA / flex_attention masks), never from attndsl code. Both sides run in float64; the
largest error seen per feature is collected in ``ERRORS`` and printed at the end of the module
(``pytest -s``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from helpers import ErrorReport, one_block_yaml

from attndsl.api import parse_spec
from attndsl.features.masks.random import random_blocks
from attndsl.features.scores.alibi import alibi_slopes
from attndsl.features.scores.relative_bias import t5_buckets
from attndsl.inputs import random_inputs
from attndsl.lower.compile import compile_model
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional
flex = pytest.importorskip("torch.nn.attention.flex_attention")

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

TOL = 1e-10
ERRORS = ErrorReport("max abs error vs PyTorch (float64):", width=40)
_report = ERRORS.fixture()


def check(feature: str, got, want, tol: float = TOL) -> None:
    got = torch.as_tensor(np.asarray(got, dtype=np.float64))
    want = torch.as_tensor(want, dtype=torch.float64)
    assert got.shape == want.shape, f"{feature}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    err = float((got - want).abs().max()) if got.numel() else 0.0
    ERRORS.record(feature, err)
    assert err <= tol, f"{feature}: max abs error {err:.3g} > {tol:g}"


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def spec(block: str, *, inputs: str = "", dims: str = "", seq: int | str = "dynamic",
         dtype: str = "float32") -> str:
    """A one-block YAML spec over ``x [batch, seq, 32]``; ``block`` is the indented body."""
    return one_block_yaml(block, name="oracle", dtype=dtype, seq=seq, dims=dims, inputs=inputs,
                          outputs="y: attn\n  p: attn.weights")


# --- torch-side building blocks --------------------------------------------------------------

def split_heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, s, f = x.shape
    return x.view(b, s, n, f // n).transpose(1, 2)


def merge_heads(o: torch.Tensor) -> torch.Tensor:
    b, h, s, d = o.shape
    return o.transpose(1, 2).reshape(b, s, h * d)


def linear(w, name: str, x: torch.Tensor, bias: bool) -> torch.Tensor:
    return F.linear(x, t64(w[f"{name}.weight"]), t64(w[f"{name}.bias"]) if bias else None)


def project(w, block: str, xq, xkv, heads: int, kv_heads: int, bias: bool = False):
    return (split_heads(linear(w, f"{block}.q_proj", xq, bias), heads),
            split_heads(linear(w, f"{block}.k_proj", xkv, bias), kv_heads),
            split_heads(linear(w, f"{block}.v_proj", xkv, bias), kv_heads))


# RoPE, as Hugging Face writes it (Llama: rotate_half; GPT-NeoX: partial rotary_pct;
# GPT-J: rotate_every_two with duplicate-interleaved sin/cos).

def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def rope_llama(x: torch.Tensor, pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Llama ``apply_rotary_pos_emb`` on the first ``dim`` features (GPT-NeoX rotary_ndims)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).double() / dim))
    freqs = torch.outer(pos.double(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    x_rot, x_pass = x[..., :dim], x[..., dim:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def rope_gptj(x: torch.Tensor, pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """GPT-J ``apply_rotary_pos_emb`` (interleaved pairs) on the first ``rotary_dim`` features."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    sinusoid = torch.einsum("i,j->ij", pos.double(), inv_freq)
    sin = torch.repeat_interleave(sinusoid.sin(), 2, dim=-1)[None, None]
    cos = torch.repeat_interleave(sinusoid.cos(), 2, dim=-1)[None, None]
    x_rot, x_pass = x[..., :dim], x[..., dim:]
    return torch.cat((x_rot * cos + rotate_every_two(x_rot) * sin, x_pass), dim=-1)


# ALiBi slopes: BLOOM's build_alibi_tensor, and Press et al.'s recursive get_slopes.

def bloom_slopes(num_heads: int) -> torch.Tensor:
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float64)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))),
                                  dtype=torch.float64)
        remaining = min(closest, num_heads - closest)
        extra = torch.pow(extra_base, torch.arange(1, 1 + 2 * remaining, 2, dtype=torch.int32))
        slopes = torch.cat([slopes, extra], dim=0)
    return slopes


def press_slopes(n: int) -> list[float]:
    def pow2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return pow2(n)
    closest = 2 ** math.floor(math.log2(n))
    return pow2(closest) + press_slopes(2 * closest)[0::2][: n - closest]


# T5: Hugging Face T5Attention._relative_position_bucket.

def hf_t5_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    relative_position_if_large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    relative_position_if_large = torch.min(
        relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1))
    return relative_buckets + torch.where(is_small, relative_position, relative_position_if_large)


# --- the generic torch block -----------------------------------------------------------------

MaskFn = Callable  # (t, b, h, q, k) -> bool tensor; q is the absolute query position
ScoreFn = Callable  # (t, score, b, h, q, k) -> tensor


def torch_probs(q, k, scale, mask_mod, score_mod, q_offset):
    """Explicit softmax probabilities (flex_attention returns none); fully masked rows -> 0."""
    bsz, heads, sq, _ = q.shape
    sk = k.shape[2]
    kk = k.repeat_interleave(heads // k.shape[1], dim=1)
    s = (scale if scale is not None else q.shape[-1] ** -0.5) * q @ kk.transpose(-1, -2)
    b = torch.arange(bsz).view(-1, 1, 1, 1)
    h = torch.arange(heads).view(1, -1, 1, 1)
    qi = torch.arange(sq).view(1, 1, -1, 1) + q_offset
    ki = torch.arange(sk).view(1, 1, 1, -1)
    if score_mod is not None:
        s = score_mod(s, b, h, qi, ki)
    if mask_mod is not None:
        s = s.masked_fill(~mask_mod(b, h, qi, ki).expand_as(s), -math.inf)
    return torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)


def torch_attention(q, k, v, *, engine: str, scale=None, mask_mod=None, score_mod=None,
                    q_offset: int = 0) -> torch.Tensor:
    """q [B, H, Sq, D], k/v [B, G, Sk, *]; mask_mod/score_mod see absolute query positions."""
    bsz, heads, sq, _ = q.shape
    sk = k.shape[2]
    gqa = k.shape[1] != heads
    mm = None if mask_mod is None else (lambda b, h, qi, ki: mask_mod(b, h, qi + q_offset, ki))
    if engine == "flex":
        sm = None if score_mod is None else (
            lambda s, b, h, qi, ki: score_mod(s, b, h, qi + q_offset, ki))
        bm = None if mm is None else flex.create_block_mask(mm, bsz, heads, sq, sk, device="cpu")
        return flex.flex_attention(q, k, v, score_mod=sm, block_mask=bm, scale=scale,
                                   enable_gqa=gqa)
    assert score_mod is None, "score modifiers go through flex_attention"
    if engine == "sdpa_causal":
        assert q_offset == 0
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                              enable_gqa=gqa)
    mask = None if mm is None else flex.create_mask(mm, bsz, heads, sq, sk, device="cpu")
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def torch_block(model, w, inputs, *, mask: MaskFn | None = None,
                score: ScoreFn | None = None, engine: str = "flex", rope=None, past: int = 0,
                scale=None, bias: bool = False) -> dict:
    """Torch outputs {'y', 'p', present caches} of a one-block self-attention model 'attn'."""
    blk = model.blocks[0]
    w = {k: t64(np.asarray(v).astype(model.dtype)) for k, v in w.items()}
    t = {k: (t64(v) if v.dtype.kind == "f" else torch.as_tensor(v)) for k, v in inputs.items()}
    x = t["x"]
    q, k, v = project(w, "attn", x, x, blk.heads, blk.kv_heads, bias)
    pos = torch.arange(x.shape[1]) + past
    if rope is not None:
        q, k = rope(q, pos), rope(k, pos)
    cache = {}
    if blk.cache:
        k = torch.cat([t["attn.past_key"], k], dim=2)
        v = torch.cat([t["attn.past_value"], v], dim=2)
        cache = {"attn.present_key": k, "attn.present_value": v}
    mm = None if mask is None else (lambda b, h, qi, ki: mask(t, b, h, qi, ki))
    sm = None if score is None else (lambda s, b, h, qi, ki: score(t, s, b, h, qi, ki))
    o = torch_attention(q, k, v, engine=engine, scale=scale, mask_mod=mm, score_mod=sm,
                        q_offset=past)
    return {"y": linear(w, "attn.o_proj", merge_heads(o), bias),
            "p": torch_probs(q, k, scale, mm, sm, past), **cache}


def run_case(feature: str, text: str, *, sizes: dict | None = None, past: int = 0,
             seed: int = 0, inputs_hook=None, **kw) -> None:
    """Compare run_reference with torch_block on a one-block spec (block 'attn')."""
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, sizes or {"seq": 11}, seed=seed, past_len=past)
    if inputs_hook is not None:
        inputs_hook(inputs)
    ref = run_reference(model, w, inputs)
    want = torch_block(model, w, inputs, past=past, **kw)
    for name, value in ref.items():
        tag = {"y": "", "p": " (probs)"}.get(name, " (present)")
        check(feature + tag, value, want[name])


# --- constant tables -------------------------------------------------------------------------

@pytest.mark.parametrize("heads", range(1, 49))
def test_alibi_slopes_match_bloom_and_press(heads):
    check("alibi slopes (BLOOM)", alibi_slopes(heads), bloom_slopes(heads), 1e-15)
    press = torch.tensor(press_slopes(heads), dtype=torch.float64)
    check("alibi slopes (Press)", alibi_slopes(heads), press, 1e-15)


@pytest.mark.parametrize("buckets, max_distance, bidirectional",
                         [(32, 128, True), (32, 128, False), (8, 16, True), (10, 20, False),
                          (64, 256, True)])
def test_t5_buckets_match_hugging_face(buckets, max_distance, bidirectional):
    rel = torch.arange(-700, 701)
    want = hf_t5_bucket(rel, bidirectional, buckets, max_distance)
    got = t5_buckets(rel.numpy(), buckets, max_distance, bidirectional)
    assert np.array_equal(got, want.numpy())


def contract_random_table(r: int, block: int, seed: int, q_len: int, k_len: int):
    """random(r, block=B, seed=S) as docs/language.md defines it, transcribed: numpy's
    generator draws the choices, torch builds the cell mask from q // B and k // B."""
    nq, nk = -(-q_len // block), -(-k_len // block)
    rng = np.random.default_rng(seed)
    chosen = torch.zeros(nq, nk, dtype=torch.bool)
    for qb in range(nq):
        chosen[qb, torch.as_tensor(rng.choice(nk, size=min(r, nk), replace=False))] = True
    qi = torch.arange(q_len)[:, None]
    ki = torch.arange(k_len)[None, :]
    return chosen[qi // block, ki // block]


@pytest.mark.parametrize("r, block, seed, q_len, k_len",
                         [(2, 4, 0, 16, 16), (3, 4, 7, 11, 13), (5, 3, 1, 9, 7),
                          (1, 64, 0, 200, 130), (2, 2, 42, 1, 9)])
def test_random_blocks_follow_the_contract(r, block, seed, q_len, k_len):
    want = contract_random_table(r, block, seed, q_len, k_len)
    assert np.array_equal(random_blocks(r, block, seed, q_len, k_len), want.numpy())


# --- masks: flex_attention block masks and SDPA boolean masks ---------------------------------

def causal(t, b, h, q, k):
    return k <= q


def sliding(w):
    return lambda t, b, h, q, k: (k <= q) & (q - k < w)


def window(left, right):
    return lambda t, b, h, q, k: (k >= q - left) & (k <= q + right)


def prefix(n):
    return lambda t, b, h, q, k: k < n


def global_(*pos):
    def fn(t, b, h, q, k):
        out = torch.zeros_like(q - k, dtype=torch.bool)
        for p in pos:
            out = out | (q == p) | (k == p)
        return out
    return fn


def heads_in(*hs):
    def fn(t, b, h, q, k):
        out = torch.zeros_like(h, dtype=torch.bool)
        for x in hs:
            out = out | (h == x)
        return out
    return fn


def either(*fns):
    def fn(t, b, h, q, k):
        out = fns[0](t, b, h, q, k)
        for f in fns[1:]:
            out = out | f(t, b, h, q, k)
        return out
    return fn


def both(*fns):
    def fn(t, b, h, q, k):
        out = fns[0](t, b, h, q, k)
        for f in fns[1:]:
            out = out & f(t, b, h, q, k)
        return out
    return fn


BIGBIRD = contract_random_table(2, 4, 3, 16, 16)

LEN_INPUT = "  lens: {shape: [batch], dtype: int64}\n"
IDS_INPUT = "  ids: {shape: [batch, seq], dtype: int64}\n"

MASK_CASES = [
    ("causal", "causal", causal, "", {}),
    ("sliding", "sliding(4)", sliding(4), "", {}),
    ("window(l, r)", "window(3, 1)", window(3, 1), "", {}),
    ("dilated", "dilated(6, 2, 2)",
     lambda t, b, h, q, k: (k >= q - 6) & (k <= q + 2) & ((q - k) % 2 == 0), "", {}),
    ("strided", "causal & strided(3)", lambda t, b, h, q, k: (k <= q) & ((q - k) % 3 == 0),
     "", {}),
    ("chunk", "chunk(4)", lambda t, b, h, q, k: q // 4 == k // 4, "", {}),
    ("fixed (chunk | summary) & causal", "causal & (chunk(4) | summary(4, 1))",
     lambda t, b, h, q, k: (k <= q) & ((q // 4 == k // 4) | (k % 4 == 3)), "", {}),
    ("prefix-LM causal | prefix(n)", "causal | prefix(4)", either(causal, prefix(4)), "", {}),
    ("sinks sliding | prefix", "sliding(3) | prefix(2)", either(sliding(3), prefix(2)), "", {}),
    ("sinks causal & (sliding | prefix)", "causal & (sliding(3) | prefix(2))",
     both(causal, either(sliding(3), prefix(2))), "", {}),
    ("global", "global(0, 5)", global_(0, 5), "", {}),
    ("Longformer window | global", "window(2, 2) | global(0, 7)",
     either(window(2, 2), global_(0, 7)), "", {}),
    ("Longformer sliding | global", "sliding(3) | global(0)",
     either(sliding(3), global_(0)), "", {}),
    ("heads per-head patterns", "heads(0..1) & causal | heads(2, 3) & sliding(2)",
     either(both(heads_in(0, 1), causal), both(heads_in(2, 3), sliding(2))), "", {}),
    ("heads & ~causal (full rows masked)", "heads(0, 3) & ~causal",
     lambda t, b, h, q, k: heads_in(0, 3)(t, b, h, q, k) & (k > q), "", {}),
    ("BigBird random | window | global",
     "random(2, block=4, seed=3) | window(1, 1) | global(0)",
     either(lambda t, b, h, q, k: BIGBIRD[q, k], window(1, 1), global_(0)), "", {"seq": 16}),
    ("padding", "causal & padding(lens)",
     lambda t, b, h, q, k: (k <= q) & (k < t["lens"][b]), LEN_INPUT, {}),
    ("prefix(len)", "causal | prefix(lens)",
     lambda t, b, h, q, k: (k <= q) | (k < t["lens"][b]), LEN_INPUT, {}),
    ("document", "causal & document(ids)",
     lambda t, b, h, q, k: (k <= q) & (t["ids"][b, q] == t["ids"][b, k]), IDS_INPUT, {}),
    ("document | global", "document(ids) | global(1)",
     either(lambda t, b, h, q, k: t["ids"][b, q] == t["ids"][b, k], global_(1)), IDS_INPUT, {}),
    ("none | ~all", "none | ~all", lambda t, b, h, q, k: torch.zeros_like(q - k) > 0, "", {}),
]


@pytest.mark.parametrize("engine", ["flex", "sdpa"])
@pytest.mark.parametrize("feature, expr, fn, inputs, dims", MASK_CASES,
                         ids=[c[0] for c in MASK_CASES])
def test_mask(feature, expr, fn, inputs, dims, engine):
    text = spec(f"    heads: 4\n    kv_heads: 2\n    mask: {expr}\n", inputs=inputs,
                seq=dims.get("seq", "dynamic"))
    run_case(f"mask {feature} [{engine}]", text, mask=fn, engine=engine,
             sizes={"seq": 11, **dims})


# --- score modifiers (flex_attention score_mod) -------------------------------------------------

SLOPES6 = bloom_slopes(6)


def alibi(t, s, b, h, q, k):
    return s - SLOPES6[h] * (q - k).abs()


def softcap(c):
    return lambda t, s, b, h, q, k: c * torch.tanh(s / c)


def then(*fns):
    def fn(t, s, b, h, q, k):
        for f in fns:
            s = f(t, s, b, h, q, k)
        return s
    return fn


@pytest.mark.parametrize("feature, block, mask, score", [
    ("alibi (6 heads, BLOOM slopes)", "    score: [alibi]\n", None, alibi),
    ("sliding + alibi", "    mask: sliding(5)\n    score: [alibi]\n", sliding(5), alibi),
    ("softcap", "    mask: causal\n    score: [softcap(2.0)]\n", causal, softcap(2.0)),
    ("alibi then softcap", "    score: [alibi, softcap(1.5)]\n", None,
     then(alibi, softcap(1.5))),
    ("softcap then alibi", "    score: [softcap(1.5), alibi]\n", None,
     then(softcap(1.5), alibi)),
])
def test_score(feature, block, mask, score):
    text = spec("    heads: 6\n    kv_heads: 3\n    head_dim: 4\n" + block)
    run_case(f"score {feature}", text, mask=mask, score=score, sizes={"seq": 13})


@pytest.mark.parametrize("buckets, max_distance, bidirectional, mask", [
    (8, 16, True, None), (8, 12, False, causal), (32, 128, True, sliding(9))])
def test_t5_relative_bias(buckets, max_distance, bidirectional, mask):
    flag = "true" if bidirectional else "false"
    mexpr = "    mask: causal\n" if mask is causal else (
        "    mask: sliding(9)\n" if mask is not None else "")
    text = spec(f"    heads: 4\n{mexpr}    score: [relative_bias(buckets={buckets}, "
                f"max_distance={max_distance}, bidirectional={flag})]\n")
    table = t64(load_weights(parse_spec(text, "x.yaml"))["attn.relative_bias.weight"])

    def t5(t, s, b, h, q, k):  # HF: relative_position = memory_position - context_position
        return s + table[hf_t5_bucket(k - q, bidirectional, buckets, max_distance), h]

    run_case(f"score T5 relative_bias({buckets}, {max_distance}, {flag})", text, mask=mask,
             score=t5, sizes={"seq": 24})


# --- RoPE, GQA / MQA, projections -------------------------------------------------------------

@pytest.mark.parametrize("feature, block, rope, engine", [
    ("causal GQA + Llama rope", "    kv_heads: 2\n    mask: causal\n    rope: {theta: 10000.0}\n",
     lambda x, p: rope_llama(x, p, 8, 10000.0), "sdpa_causal"),
    ("causal MQA + rope theta 5e5", "    kv_heads: 1\n    mask: causal\n"
     "    rope: {theta: 500000.0}\n", lambda x, p: rope_llama(x, p, 8, 500000.0), "sdpa_causal"),
    ("NeoX partial rope (rotary_pct 0.5)", "    mask: causal\n    rope: {dim: 4}\n",
     lambda x, p: rope_llama(x, p, 4, 10000.0), "sdpa_causal"),
    ("GPT-J interleaved rope", "    mask: causal\n    rope: {interleaved: true, theta: 100.0}\n",
     lambda x, p: rope_gptj(x, p, 8, 100.0), "sdpa_causal"),
    ("GPT-J interleaved partial rope", "    kv_heads: 2\n    mask: causal\n"
     "    rope: {interleaved: true, dim: 4}\n", lambda x, p: rope_gptj(x, p, 4, 10000.0), "flex"),
])
def test_rope(feature, block, rope, engine):
    text = spec("    heads: 4\n" + block)
    run_case(f"rope {feature}", text, mask=causal, rope=rope, engine=engine,
             sizes={"seq": 12})


def test_dense_mha_bias_scale_vdim_outdim():
    text = spec("    heads: 2\n    head_dim: 6\n    v_head_dim: 5\n    bias: true\n"
                "    scale: 0.3\n    out_dim: 7\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 9}, seed=3)
    ref = run_reference(model, w, inputs)
    x = t64(inputs["x"])
    q, k, v = project(w, "attn", x, x, 2, 2, bias=True)
    o = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    check("dense MHA + bias, scale, v_head_dim, out_dim",
          ref["y"], linear(w, "attn.o_proj", merge_heads(o), True))
    check("dense MHA + bias, scale, v_head_dim, out_dim (probs)",
          ref["p"], torch.softmax(0.3 * q @ k.transpose(-1, -2), -1))


# --- KV cache --------------------------------------------------------------------------------

@pytest.mark.parametrize("past, seq", [(5, 4), (6, 1), (0, 5)])
def test_cache_causal_gqa_rope_bottom_right(past, seq):
    text = spec("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: {theta: 10000.0}\n"
                "    cache: true\n")

    def bottom_right(t, b, h, q, k):  # q is already past + i: an explicit bottom-right mask
        return k <= q

    run_case(f"cache causal GQA + rope (past {past}, seq {seq})", text, mask=bottom_right,
             rope=lambda x, p: rope_llama(x, p, 8, 10000.0), engine="sdpa",
             sizes={"seq": seq}, past=past)


def test_cache_sliding_alibi_flex():
    text = spec("    heads: 6\n    kv_heads: 3\n    head_dim: 4\n    mask: sliding(4)\n"
                "    score: [alibi]\n    cache: true\n")
    run_case("cache sliding + alibi (past 7)", text, mask=sliding(4), score=alibi,
             sizes={"seq": 5}, past=7)


def test_cache_document_ids_over_total_length():
    text = spec("    heads: 4\n    mask: causal & document(ids)\n    cache: true\n",
                inputs="  ids: {shape: [batch, total], dtype: int64}\n",
                dims="  total: dynamic")
    run_case("cache document (past 4)", text,
             mask=lambda t, b, h, q, k: (k <= q) & (t["ids"][b, q] == t["ids"][b, k]),
             sizes={"seq": 6, "total": 10}, past=4)


# --- inputs that feed the logits or mask directly ----------------------------------------------

def sdpa_dead_rows_ok(rows: torch.Tensor) -> bool:
    """Fully masked rows from torch SDPA: NaN in older versions, 0 in torch 2.13 on CPU."""
    return bool(torch.isnan(rows).all()) or bool((rows == 0).all())


def test_bias_input_with_neg_inf_is_sdpa_float_mask():
    text = spec("    heads: 4\n    kv_heads: 2\n    score: [bias(t)]\n",
                inputs="  t: [batch, 4, seq, seq]\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 8}, seed=5)
    inputs["t"][0, 1, 3, :] = -np.inf  # batch 0, head 1, query 3: every key is -inf
    inputs["t"][1, :, :, 2] = -np.inf  # a masked key
    inputs["t"][:, :, 5, 4] = -np.inf
    ref = run_reference(model, w, inputs)
    x, bias = t64(inputs["x"]), t64(inputs["t"])
    q, k, v = project(w, "attn", x, x, 4, 2)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    assert sdpa_dead_rows_ok(o[0, 1, 3])
    assert np.all(ref["p"][0, 1, 3] == 0.0)
    o = torch.nan_to_num(o, nan=0.0)  # a fully masked row gives 0 (docs/language.md)
    check("bias(t) input with -inf (SDPA float mask)", ref["y"],
          linear(w, "attn.o_proj", merge_heads(o), False))
    s = q @ k.repeat_interleave(2, 1).transpose(-1, -2) / math.sqrt(8) + bias
    check("bias(t) input with -inf (SDPA float mask) (probs)", ref["p"],
          torch.nan_to_num(torch.softmax(s, -1), nan=0.0))


def test_mask_input_is_sdpa_bool_mask():
    text = spec("    heads: 4\n    mask: causal & mask(m)\n",
                inputs="  m: {shape: [batch, 1, seq, seq], dtype: bool}\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 9}, seed=2)
    inputs["m"][1, 0, 4, :] = False  # batch 1, query 4: a fully masked row
    ref = run_reference(model, w, inputs)
    x = t64(inputs["x"])
    q, k, v = project(w, "attn", x, x, 4, 4)
    allowed = torch.as_tensor(inputs["m"]) & torch.ones(9, 9, dtype=torch.bool).tril()
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert sdpa_dead_rows_ok(o[1, :, 4])
    assert np.all(ref["p"][1, :, 4] == 0.0) and np.all(ref["y"][1, 4] == 0.0)
    check("mask(m) bool input (SDPA bool mask)", ref["y"],
          linear(w, "attn.o_proj", merge_heads(torch.nan_to_num(o, nan=0.0)), False))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_are_zero(kind):
    text = spec("    heads: 2\n    mask: causal & ~prefix(3)\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 8}, seed=4)
    ref = run_reference(model, w, inputs)
    x = t64(inputs["x"])
    q, k, v = project(w, "attn", x, x, 2, 2)
    qi, ki = torch.arange(8)[:, None], torch.arange(8)[None, :]
    allowed = (ki <= qi) & (ki >= 3)  # queries 0, 1, 2 see no key
    mask = allowed if kind == "bool" else torch.zeros(8, 8, dtype=torch.float64).masked_fill(
        ~allowed, -math.inf)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert sdpa_dead_rows_ok(o[:, :, :3])
    assert np.all(ref["p"][:, :, :3] == 0.0) and np.all(ref["y"][:, :3] == 0.0)
    check(f"fully masked rows, other rows [SDPA {kind}]", ref["y"][:, 3:],
          linear(w, "attn.o_proj", merge_heads(o), False)[:, 3:])


# --- cross-attention, core mode, chained blocks ------------------------------------------------

def test_cross_attention_with_key_padding():
    text = ("attndsl: 1\nname: xattn\n"
            "dims: {batch: dynamic, seq: dynamic, mem: dynamic, d_model: 32, d_mem: 24}\n"
            "inputs:\n  x: [batch, seq, d_model]\n  enc: [batch, mem, d_mem]\n"
            "  lens: {shape: [batch], dtype: int64}\n"
            "blocks:\n  attn:\n    query: x\n    key_value: enc\n    heads: 4\n"
            "    kv_heads: 2\n    mask: padding(lens) & window(3, 20)\n"
            "    score: [alibi]\n"
            "outputs:\n  y: attn\n  p: attn.weights\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 5, "mem": 9}, seed=6)
    ref = run_reference(model, w, inputs)
    x, enc, lens = t64(inputs["x"]), t64(inputs["enc"]), torch.as_tensor(inputs["lens"])
    q, k, v = project(w, "attn", x, enc, 4, 2)
    slopes = bloom_slopes(4)

    def mm(b, h, qi, ki):  # cross-attention: query i sits at position i
        return (ki < lens[b]) & (ki >= qi - 3) & (ki <= qi + 20)

    def sm(s, b, h, qi, ki):
        return s - slopes[h] * (qi - ki).abs()

    o = torch_attention(q, k, v, engine="flex", mask_mod=mm, score_mod=sm)
    check("cross-attention + padding + window + alibi", ref["y"],
          linear(w, "attn.o_proj", merge_heads(o), False))
    check("cross-attention + padding + window + alibi (probs)", ref["p"],
          torch_probs(q, k, None, mm, sm, 0))


def test_core_mode_without_projections():
    text = ("attndsl: 1\nname: core\ndims: {batch: dynamic, s: dynamic}\n"
            "inputs:\n  q: [batch, s, 24]\n  k: [batch, s, 8]\n  v: [batch, s, 10]\n"
            "blocks:\n  attn:\n    project: false\n    query: q\n    key: k\n    value: v\n"
            "    heads: 6\n    kv_heads: 2\n    head_dim: 4\n    v_head_dim: 5\n"
            "    mask: causal\n    score: [softcap(3.0)]\n    rope: {theta: 1000.0}\n"
            "outputs:\n  y: attn\n")
    model = parse_spec(text, "x.yaml")
    inputs = random_inputs(model, {"s": 10}, seed=8)
    ref = run_reference(model, load_weights(model), inputs)
    pos = torch.arange(10)
    q = rope_llama(split_heads(t64(inputs["q"]), 6), pos, 4, 1000.0)
    k = rope_llama(split_heads(t64(inputs["k"]), 2), pos, 4, 1000.0)
    v = split_heads(t64(inputs["v"]), 2)
    o = torch_attention(q, k, v, engine="flex", mask_mod=lambda b, h, qi, ki: ki <= qi,
                        score_mod=lambda s, b, h, qi, ki: 3.0 * torch.tanh(s / 3.0))
    check("core mode (no projections) + rope + softcap", ref["y"], merge_heads(o))


def test_chained_blocks():
    text = ("attndsl: 1\nname: two\ndims: {batch: dynamic, seq: dynamic}\n"
            "inputs:\n  x: [batch, seq, 16]\n"
            "blocks:\n  a1:\n    query: x\n    heads: 2\n    mask: causal\n"
            "  a2:\n    query: a1\n    heads: 4\n    kv_heads: 1\n    mask: sliding(3)\n"
            "    out_dim: 8\n"
            "outputs:\n  y: a2\n  h: a1\n")
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, {"seq": 7}, seed=9)
    ref = run_reference(model, w, inputs)
    x = t64(inputs["x"])
    q, k, v = project(w, "a1", x, x, 2, 2)
    h1 = linear(w, "a1.o_proj", merge_heads(
        F.scaled_dot_product_attention(q, k, v, is_causal=True)), False)
    q, k, v = project(w, "a2", h1, h1, 4, 1)
    qi, ki = torch.arange(7)[:, None], torch.arange(7)[None, :]
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=(ki <= qi) & (qi - ki < 3),
                                       enable_gqa=True)
    check("chained blocks (first)", ref["h"], h1)
    check("chained blocks (second, MQA sliding)", ref["y"],
          linear(w, "a2.o_proj", merge_heads(o), False))


# --- the emitted ONNX (portable lowering on ONNX Runtime) against torch directly ----------------

def _t5_8_16(t, s, b, h, q, k):
    return s + T5_TABLE[hf_t5_bucket(k - q, True, 8, 16), h]


T5_TEXT = spec("    heads: 4\n    mask: causal\n"
               "    score: [relative_bias(buckets=8, max_distance=16)]\n")
T5_TABLE = t64(load_weights(parse_spec(T5_TEXT, "x.yaml"))["attn.relative_bias.weight"])

ORT_CASES = [
    # feature, spec text, torch_block keywords, sizes, past, tolerance
    ("causal GQA + rope + cache", spec("    heads: 4\n    kv_heads: 2\n    mask: causal\n"
                                       "    rope: {theta: 10000.0}\n    cache: true\n"),
     dict(mask=causal, rope=lambda x, p: rope_llama(x, p, 8, 10000.0), engine="sdpa"),
     {"seq": 6}, 5, 1e-5),
    ("causal GQA + rope + cache, float16",
     spec("    heads: 4\n    kv_heads: 2\n    mask: causal\n    rope: {theta: 10000.0}\n"
          "    cache: true\n", dtype="float16"),
     dict(mask=causal, rope=lambda x, p: rope_llama(x, p, 8, 10000.0), engine="sdpa"),
     {"seq": 6}, 5, 4e-3),
    ("sliding + alibi", spec("    heads: 6\n    kv_heads: 3\n    head_dim: 4\n"
                             "    mask: sliding(4)\n    score: [alibi]\n"),
     dict(mask=sliding(4), score=alibi), {"seq": 13}, 0, 1e-5),
    ("softcap", spec("    heads: 4\n    mask: causal\n    score: [softcap(2.0)]\n"),
     dict(mask=causal, score=softcap(2.0)), {"seq": 11}, 0, 1e-5),
    ("document", spec("    heads: 4\n    kv_heads: 2\n    mask: causal & document(ids)\n",
                      inputs=IDS_INPUT),
     dict(mask=lambda t, b, h, q, k: (k <= q) & (t["ids"][b, q] == t["ids"][b, k]),
          engine="sdpa"), {"seq": 11}, 0, 1e-5),
    ("T5 relative_bias", T5_TEXT, dict(mask=causal, score=_t5_8_16), {"seq": 20}, 0, 1e-5),
    ("BigBird random | window | global",
     spec("    heads: 4\n    kv_heads: 2\n"
          "    mask: random(2, block=4, seed=3) | window(1, 1) | global(0)\n", seq=16),
     dict(mask=either(lambda t, b, h, q, k: BIGBIRD[q, k], window(1, 1), global_(0)),
          engine="sdpa"), {"seq": 16}, 0, 1e-5),
    ("heads & ~causal (full rows masked)", spec("    heads: 4\n    mask: heads(0, 3) & ~causal\n"),
     dict(mask=lambda t, b, h, q, k: heads_in(0, 3)(t, b, h, q, k) & (k > q)),
     {"seq": 9}, 0, 1e-5),
]


@pytest.mark.parametrize("feature, text, kw, sizes, past, tol", ORT_CASES,
                         ids=[c[0] for c in ORT_CASES])
def test_onnx_runtime_against_torch(feature, text, kw, sizes, past, tol):
    model = parse_spec(text, "x.yaml")
    w = load_weights(model)
    inputs = random_inputs(model, sizes, seed=11, past_len=past)
    got = run_session(make_session(compile_model(model, w)), inputs)
    want = torch_block(model, w, inputs, past=past, **kw)
    assert list(got) == list(want)  # spec outputs, then the cache outputs
    for name, value in got.items():
        assert value.dtype == np.dtype(model.dtype)
        tag = {"y": "", "p": " (probs)"}.get(name, " (present)")
        check(f"ORT {feature}{tag}", value, want[name], tol)
