"""attndsl.features.rope_scaling against transformers 5.23 itself.

inv_freq is compared with ``ROPE_INIT_FUNCTIONS`` (and the models' default init), the attention
factor with the init functions' second result, cos/sin with the models' rotary modules
(Llama, Phi-3, gpt-oss), including the dynamic/longrope run-time switches and the dynamic
module's state across calls.

Tolerances: torch's float32 ``pow``/``cos``/``sin`` are not correctly rounded (this module
rounds the float64 value), so inverse frequencies may differ by 1-2 ulp (relative <= 2.5e-7)
and cos/sin by ``(1 + angle) * 2.5e-7`` times the attention factor: an inverse frequency that
differs by 1 ulp moves a float32 angle ``a`` by about ``a * 1.2e-7``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attndsl.errors import SpecError
from attndsl.features.rope_scaling import (
    RopeScaling,
    RotaryState,
    attention_factor,
    cos_sin,
    inv_freq,
    validate_rope_scaling,
    yarn_get_mscale,
    yarn_softmax_scale,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers import GptOssConfig, LlamaConfig, Phi3Config  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding  # noqa: E402

INV_RTOL = 2.5e-7
CS_TOL = 2.5e-7


def _factors(n: int, lo: float, hi: float, seed: int) -> tuple[float, ...]:
    # Phi-3-like lists: increasing from about lo to hi, with jitter; Python floats as in JSON
    rng = np.random.default_rng(seed)
    base = np.geomspace(lo, hi, n) * (1 + 0.01 * rng.random(n))
    return tuple(float(round(x, 6)) for x in base)


# (name, scaling, base, dim, model): ``model`` picks the transformers config/rotary module.
CASES = [
    ("default-10k-64", RopeScaling(), 10000.0, 64, "llama"),
    ("default-1m-128", RopeScaling(), 1e6, 128, "llama"),
    ("linear-2", RopeScaling("linear", factor=2.0), 10000.0, 128, "llama"),
    ("linear-4-d80", RopeScaling("linear", factor=4), 10000.0, 80, "llama"),
    ("dynamic-2", RopeScaling("dynamic", factor=2.0, max_position_embeddings=2048),
     10000.0, 64, "llama"),
    ("dynamic-4-500k", RopeScaling("dynamic", factor=4.0, max_position_embeddings=4096),
     500000.0, 128, "llama"),
    ("llama3.1", RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=8192,
                             max_position_embeddings=131072), 500000.0, 128, "llama"),
    ("llama3.2", RopeScaling("llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                             original_max_position_embeddings=8192,
                             max_position_embeddings=131072), 500000.0, 64, "llama"),
    ("llama3-small", RopeScaling("llama3", factor=4.0, low_freq_factor=2.0,
                                 high_freq_factor=8.0, original_max_position_embeddings=512,
                                 max_position_embeddings=2048), 10000.0, 64, "llama"),
    ("yarn-qwen2.5", RopeScaling("yarn", factor=4.0, original_max_position_embeddings=32768,
                                 max_position_embeddings=32768), 1e6, 128, "llama"),
    ("yarn-qwen3", RopeScaling("yarn", factor=4.0, original_max_position_embeddings=32768,
                               max_position_embeddings=40960), 1e6, 128, "llama"),
    ("yarn-deepseek-v3", RopeScaling("yarn", factor=40.0, original_max_position_embeddings=4096,
                                     beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0,
                                     max_position_embeddings=163840), 10000.0, 64, "llama"),
    ("yarn-mscale-ratio", RopeScaling("yarn", factor=16.0,
                                      original_max_position_embeddings=4096, mscale=1.0,
                                      mscale_all_dim=0.707, max_position_embeddings=65536),
     10000.0, 64, "llama"),
    ("yarn-gpt-oss", RopeScaling("yarn", factor=32.0, original_max_position_embeddings=4096,
                                 beta_fast=32.0, beta_slow=1.0, truncate=False,
                                 max_position_embeddings=131072), 150000.0, 64, "gpt_oss"),
    ("yarn-attn-factor", RopeScaling("yarn", factor=8.0, original_max_position_embeddings=2048,
                                     attention_factor=1.25, beta_fast=16.0, beta_slow=2.0,
                                     max_position_embeddings=16384), 10000.0, 96, "llama"),
    ("longrope-phi3-mini-128k", RopeScaling(
        "longrope", original_max_position_embeddings=4096, max_position_embeddings=131072,
        short_factor=_factors(48, 1.0, 1.3, 0), long_factor=_factors(48, 1.0, 60.0, 1)),
     10000.0, 96, "phi3"),
    ("longrope-factor-attn", RopeScaling(
        "longrope", original_max_position_embeddings=2048, max_position_embeddings=65536,
        factor=16.0, attention_factor=1.1, short_factor=_factors(32, 1.0, 1.1, 2),
        long_factor=_factors(32, 1.2, 40.0, 3)), 10000.0, 64, "phi3"),
]
IDS = [c[0] for c in CASES]


def _hf_config(s: RopeScaling, base: float, dim: int, model: str):
    params = s.to_mapping()
    params.pop("max_position_embeddings", None)
    params["rope_theta"] = base
    mpe = s.max_position_embeddings or 4096
    common = dict(hidden_size=2 * dim, num_attention_heads=2, num_key_value_heads=2,
                  max_position_embeddings=mpe, rope_parameters=params)
    if model == "phi3":
        # Phi3Config's own original_max_position_embeddings overrides the one in rope_parameters
        return Phi3Config(original_max_position_embeddings=s.original_max_position_embeddings,
                          **common)
    if model == "gpt_oss":
        return GptOssConfig(head_dim=dim, **common)
    return LlamaConfig(head_dim=dim, **common)


def _hf_module(s: RopeScaling, base: float, dim: int, model: str):
    cfg = _hf_config(s, base, dim, model)
    cls = {"llama": LlamaRotaryEmbedding, "phi3": Phi3RotaryEmbedding,
           "gpt_oss": GptOssRotaryEmbedding}[model]
    return cls(cfg)


def _hf_init(s: RopeScaling, base: float, dim: int, model: str, seq_len=None):
    cfg = _hf_config(s, base, dim, model)
    if s.rope_type == "default":
        inv, att = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    else:
        inv, att = ROPE_INIT_FUNCTIONS[s.rope_type](cfg, "cpu", seq_len=seq_len)
    return inv.numpy(), att


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b) / np.abs(b.astype(np.float64))))


def _seq_lens(s: RopeScaling) -> list[int | None]:
    orig = s.original_max_position_embeddings or s.max_position_embeddings or 4096
    if s.rope_type == "dynamic":
        m = s.max_position_embeddings
        return [None, 7, m - 1, m, m + 1, 3 * m + 5, 40 * m]
    return [None, 1, orig, orig + 1, 4 * orig]


@pytest.mark.parametrize("name,s,base,dim,model", CASES, ids=IDS)
def test_inv_freq_and_attention_factor_match_init_functions(name, s, base, dim, model):
    assert s.problems(dim) == []
    for L in _seq_lens(s):
        want, want_att = _hf_init(s, base, dim, model, seq_len=L)
        got = inv_freq(s, base, dim, L)
        assert got.dtype == np.float32 and got.shape == want.shape == (dim // 2,)
        assert _rel(got, want) <= INV_RTOL, (name, L, _rel(got, want))
        # the attention factor is Python float arithmetic in transformers: exactly equal
        assert attention_factor(s, L) == want_att, (name, L)


@pytest.mark.parametrize("name,s,base,dim,model",
                         [c for c in CASES if c[1].rope_type == "dynamic"],
                         ids=[c[0] for c in CASES if c[1].rope_type == "dynamic"])
def test_dynamic_runtime_base_is_float32_tensor_arithmetic(name, s, base, dim, model):
    m = s.max_position_embeddings
    for L in (m + 1, 2 * m + 3, 7 * m + 11, 33 * m):
        want, _ = _hf_init(s, base, dim, model, seq_len=torch.tensor(L))
        got = inv_freq(s, base, dim, L, runtime=True)
        assert _rel(got, want) <= INV_RTOL, (L, _rel(got, want))
        # the float64 (Python) base gives other float32 numbers at some lengths: the two paths
        # are kept apart on purpose; both stay close
        assert _rel(inv_freq(s, base, dim, L), want) < 1e-5


def _positions(s: RopeScaling) -> list[np.ndarray]:
    """Position-id batches on both sides of the original length (and of M for dynamic)."""
    edge = (s.max_position_embeddings if s.rope_type == "dynamic"
            else s.original_max_position_embeddings or 4096)
    rng = np.random.default_rng(7)
    short = np.stack([np.arange(0, 37), np.arange(5, 42)])  # batch 2, left-offset row
    at_edge = np.stack([np.arange(edge - 20, edge), np.arange(edge - 40, edge - 20)])
    over = np.stack([np.arange(edge - 10, edge + 10),
                     np.sort(rng.integers(0, edge, 20))])  # one row crosses: all go long
    far = np.array([np.sort(rng.integers(0, 6 * edge, 33))])
    return [short, at_edge, over, far, np.array([[0]]), np.array([[edge]])]


def _cs_tol(inv: np.ndarray, pos: np.ndarray, att: float, half: bool = False) -> np.ndarray:
    """Elementwise bound: a few ulp of cos/sin plus the angle times the inv_freq ulps."""
    ang = np.abs(pos.astype(np.float64)[..., None] * inv.astype(np.float64))
    if not half:
        ang = np.concatenate([ang, ang], axis=-1)
    return CS_TOL * (1.0 + ang) * max(att, 1.0)


@pytest.mark.parametrize("name,s,base,dim,model", CASES, ids=IDS)
def test_cos_sin_match_rotary_module(name, s, base, dim, model):
    x = torch.zeros(1, dtype=torch.float32)
    for pos in _positions(s):
        mod = _hf_module(s, base, dim, model)  # fresh module: one call, no history
        c_t, s_t = mod(x, torch.from_numpy(pos.astype(np.int64)))
        c_t, s_t = c_t.numpy(), s_t.numpy()
        c, sn = cos_sin(s, base, dim, pos)
        if model == "gpt_oss":  # gpt-oss returns the half table (no concat)
            c, sn = c[..., : dim // 2], sn[..., : dim // 2]
        assert c.shape == c_t.shape and c.dtype == np.float32
        tol = _cs_tol(mod.inv_freq.numpy(), pos, mod.attention_scaling, model == "gpt_oss")
        assert np.all(np.abs(c - c_t) <= tol), (name, pos.max())
        assert np.all(np.abs(sn - s_t) <= tol), (name, pos.max())
        # the float64 oracle differs only by transformers' float32 angle rounding
        c64, s64 = cos_sin(s, base, dim, pos, dtype=np.float64)
        if model == "gpt_oss":
            c64 = c64[..., : dim // 2]
        ang = float(pos.max()) * float(mod.inv_freq.numpy().max())
        assert np.max(np.abs(c64 - c_t)) <= 1e-6 + ang * 2e-7 * mod.attention_scaling


def test_float16_activations_round_after_the_factor():
    name, s, base, dim, model = CASES[IDS.index("yarn-qwen2.5")]
    pos = np.stack([np.arange(0, 40), np.arange(30000, 30040)])
    c_t, s_t = _hf_module(s, base, dim, model)(torch.zeros(1, dtype=torch.float16),
                                                torch.from_numpy(pos))
    c, sn = cos_sin(s, base, dim, pos, dtype=np.float16)
    assert c.dtype == np.float16 and c_t.dtype == torch.float16
    # a float32 difference of a few ulp can flip one float16 rounding: at most 1 fp16 ulp
    assert np.max(np.abs(c.astype(np.float32) - c_t.float().numpy())) <= 2 ** -10
    assert np.max(np.abs(sn.astype(np.float32) - s_t.float().numpy())) <= 2 ** -10
    assert np.mean(c == c_t.numpy()) > 0.99


def test_longrope_switch_is_per_call_and_whole_batch():
    name, s, base, dim, model = CASES[IDS.index("longrope-phi3-mini-128k")]
    orig = s.original_max_position_embeddings
    mod = _hf_module(s, base, dim, model)
    short_inv = inv_freq(s, base, dim)
    long_inv = inv_freq(s, base, dim, orig + 1)
    assert not np.allclose(short_inv, long_inv)
    x = torch.zeros(1)
    for pos, want in ((np.arange(orig - 3, orig)[None], short_inv),     # L == orig: short
                      (np.arange(orig - 3, orig + 1)[None], long_inv),  # L == orig+1: long
                      (np.array([[0, 1, 2], [orig, orig + 1, orig + 2]]), long_inv),
                      (np.arange(0, 5)[None], short_inv)):              # and back to short
        c_t, _ = mod(x, torch.from_numpy(pos))
        assert _rel(mod.inv_freq.numpy(), want) <= INV_RTOL
        c, _ = cos_sin(s, base, dim, pos)
        assert np.all(np.abs(c - c_t.numpy()) <= _cs_tol(want, pos, mod.attention_scaling))
    # the attention factor does not switch: sqrt(1 + ln(32) / ln(4096))
    assert attention_factor(s) == math.sqrt(1 + math.log(131072 / 4096) / math.log(4096))


def test_dynamic_state_follows_transformers_across_calls():
    """The dynamic table depends on the largest length seen, and resets only below M."""
    name, s, base, dim, model = CASES[IDS.index("dynamic-2")]
    m = s.max_position_embeddings
    mod = _hf_module(s, base, dim, model)
    ours = RotaryState(s, base, dim)
    x = torch.zeros(1)
    def strided(stop: int, step: int) -> np.ndarray:  # positions 0, step, ..., stop - 1
        return np.append(np.arange(0, stop - 1, step), stop - 1)[None]

    calls = [np.arange(0, 100)[None],       # below M: init table
             strided(m + 500, 7),           # prefill past M: grows to M+500
             np.array([[m + 500]]),         # decode: grows to M+501
             np.array([[m + 501]]),         # grows to M+502
             strided(m + 100, 5),           # shorter but >= M: keeps the M+502 table
             np.array([[m - 1]]),           # L == M: neither grows nor resets
             np.arange(0, 50)[None],        # L < M after growth: reset
             strided(m + 200, 3)]           # grows again from M
    seen = []
    for pos in calls:
        c_t, s_t = mod(x, torch.from_numpy(pos))
        c, sn = ours(pos)
        assert ours.max_seq_len_cached == mod.max_seq_len_cached
        assert _rel(ours.inv_freq, mod.inv_freq.numpy()) <= INV_RTOL
        tol = _cs_tol(ours.inv_freq, pos, 1.0)
        assert np.all(np.abs(c - c_t.numpy()) <= tol)
        assert np.all(np.abs(sn - s_t.numpy()) <= tol)
        seen.append(ours.max_seq_len_cached)
    assert seen == [m, m + 500, m + 501, m + 502, m + 502, m + 502, m, m + 200]
    # the stateless cos_sin of the 5th call would use its own length: not what the module did
    stateless = inv_freq(s, base, dim, m + 100, runtime=True)
    assert not np.allclose(stateless, inv_freq(s, base, dim, m + 502, runtime=True))


def test_yarn_attention_factor_formulas():
    ds = CASES[IDS.index("yarn-deepseek-v3")][1]
    assert attention_factor(ds) == 1.0  # mscale == mscale_all_dim
    q = CASES[IDS.index("yarn-qwen2.5")][1]
    assert attention_factor(q) == 0.1 * math.log(4.0) + 1.0
    r = CASES[IDS.index("yarn-mscale-ratio")][1]
    assert attention_factor(r) == (0.1 * math.log(16) + 1) / (0.1 * 0.707 * math.log(16) + 1)
    assert yarn_get_mscale(1.0) == 1.0 and yarn_get_mscale(0.5, 3.0) == 1.0


def test_deepseek_softmax_scale_matches_transformers():
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import yarn_apply_mscale

    for _name, s, _base, _dim, _model in CASES:
        for scale in (192 ** -0.5, 0.125):
            want = yarn_apply_mscale(s.to_mapping(), scale)
            assert yarn_softmax_scale(s, scale) == want
    ds = CASES[IDS.index("yarn-deepseek-v3")][1]
    assert yarn_softmax_scale(ds, 0.125) == 0.125 * yarn_get_mscale(40.0) * yarn_get_mscale(40.0)


def test_yarn_truncate_changes_the_numbers():
    name, s, base, dim, model = CASES[IDS.index("yarn-gpt-oss")]
    t = RopeScaling(**{**s.to_mapping(), "truncate": True})
    assert not np.array_equal(inv_freq(s, base, dim), inv_freq(t, base, dim))
    want, _ = _hf_init(t, base, dim, model)
    assert _rel(inv_freq(t, base, dim), want) <= INV_RTOL


def test_factor_from_max_position_embeddings_when_absent():
    # longrope: factor defaults to max / original (yarn requires factor, as transformers does)
    name, s, base, dim, model = CASES[IDS.index("longrope-phi3-mini-128k")]
    explicit = RopeScaling(**{**s.to_mapping(), "factor": 32.0})
    assert s.factor is None and attention_factor(s) == attention_factor(explicit)
    assert np.array_equal(inv_freq(s, base, dim, 5000), inv_freq(explicit, base, dim, 5000))
    assert validate_rope_scaling({"rope_type": "yarn", "original_max_position_embeddings": 4096,
                                  "max_position_embeddings": 32768})[0][0] == "factor"


def test_float64_oracle_and_interleaved_layout():
    s = CASES[IDS.index("llama3.1")][1]
    pos = np.arange(0, 9)[None]
    c32, s32 = cos_sin(s, 500000.0, 128, pos)
    c64, s64 = cos_sin(s, 500000.0, 128, pos, dtype=np.float64)
    assert c64.dtype == np.float64 and np.max(np.abs(c64 - c32)) < 1e-6
    ci, si = cos_sin(s, 500000.0, 128, pos, interleaved=True)
    assert np.array_equal(ci[..., 0::2], c32[..., :64])
    assert np.array_equal(ci[..., 1::2], c32[..., :64])
    assert np.array_equal(si[..., 1::2], s32[..., 64:])


# ----------------------------------------------------------------------------- validation

def _keys(problems):
    return [k for k, _, _ in problems]


@pytest.mark.parametrize("name,s,base,dim,model", CASES, ids=IDS)
def test_round_trip_mapping(name, s, base, dim, model):
    assert RopeScaling.from_mapping(s.to_mapping(), dim=dim) == s


@pytest.mark.parametrize("params,dim,keys", [
    ({"rope_type": "nope"}, None, ["rope_type"]),
    ({"rope_type": "linear"}, None, ["factor"]),
    ({"rope_type": "linear", "factor": 0.5}, None, ["factor"]),
    ({"rope_type": "linear", "factor": "2"}, None, ["factor"]),
    ({"rope_type": "linear", "factor": True}, None, ["factor"]),
    ({"rope_type": "linear", "factor": 2.0, "beta_fast": 3}, None, ["beta_fast"]),
    ({"rope_type": "default", "factor": 2.0}, None, ["factor"]),
    ({"rope_type": "dynamic", "factor": 2.0}, None, ["max_position_embeddings"]),
    ({"rope_type": "dynamic", "factor": 2.0, "max_position_embeddings": 4096}, 2, ["dim"]),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
      "original_max_position_embeddings": 8192}, None, ["high_freq_factor"]),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192, "max_position_embeddings": 8192}, None,
     ["original_max_position_embeddings"]),
    ({"rope_type": "llama3", "factor": 8.0}, None,
     ["high_freq_factor", "low_freq_factor", "original_max_position_embeddings"]),
    ({"rope_type": "yarn", "factor": 4.0}, None, ["original_max_position_embeddings"]),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096.5}, None,
     ["original_max_position_embeddings"]),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
      "beta_fast": 1, "beta_slow": 8}, None, ["beta_fast"]),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
      "beta_slow": 40}, None, ["beta_fast"]),  # beta_fast defaults to 32
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
      "truncate": "no", "attention_factor": -1.0}, None, ["attention_factor", "truncate"]),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
      "rope_theta": 1e6}, None, ["rope_theta"]),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
      "low_freq_factor": 1.0}, None, ["low_freq_factor"]),
    ({"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 3,
      "original_max_position_embeddings": 4096, "factor": 8.0}, 8, ["long_factor"]),
    ({"rope_type": "longrope", "short_factor": [1.0, 0.0], "long_factor": "ab",
      "original_max_position_embeddings": 4096, "factor": 8.0}, 4,
     ["short_factor", "long_factor"]),
    ({"rope_type": "longrope", "short_factor": [1.0] * 2, "long_factor": [2.0] * 2,
      "original_max_position_embeddings": 4096}, 4, ["factor"]),
    ({"rope_type": "linear", "factor": 2.0}, 7, ["dim"]),
    ({"type": "linear", "rope_type": "dynamic", "factor": 2.0}, None, ["type"]),
])
def test_validation_problems(params, dim, keys):
    problems = validate_rope_scaling(params, dim=dim)
    assert sorted(_keys(problems)) == sorted(keys), problems
    for _key, msg, hint in problems:
        assert msg and isinstance(hint, str)
    with pytest.raises(SpecError):
        RopeScaling.from_mapping(params, dim=dim)


def test_validation_accepts_legacy_type_key_and_model_configs():
    assert validate_rope_scaling({"type": "linear", "factor": 2}) == []
    assert RopeScaling.from_mapping({"type": "linear", "factor": 2}).rope_type == "linear"
    # Qwen3's recommended yarn config: transformers only warns (factor != 40960 / 32768)
    qwen3 = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
             "max_position_embeddings": 40960}
    assert validate_rope_scaling(qwen3, dim=128) == []
    for _name, s, _base, dim, _model in CASES:
        assert validate_rope_scaling(s.to_mapping(), dim=dim) == []


def test_direct_construction_is_validated():
    with pytest.raises(SpecError, match="factor"):
        RopeScaling("linear")
    with pytest.raises(SpecError, match="mscale"):
        RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192, mscale=1.0)
    with pytest.raises(SpecError, match="rope_type"):
        RopeScaling("ntk", factor=2.0)
    assert validate_rope_scaling({"rope_type": ["yarn"]})[0][0] == "rope_type"


def test_unknown_key_hint_lists_the_type_keys():
    (key, msg, hint), = validate_rope_scaling({"rope_type": "linear", "factor": 2.0,
                                               "mscale": 1.0})
    assert key == "mscale" and "linear" in msg and hint == "'linear' takes: factor"
