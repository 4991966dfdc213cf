"""RoPE scaling with the numbers of Hugging Face transformers (5.23.0 is the definition).

Pure numpy + stdlib. The functions below follow, operation by operation, transformers'
``modeling_rope_utils.py`` (the ``ROPE_INIT_FUNCTIONS`` and the ``dynamic_rope_update`` decorator)
and the rotary-embedding module of its models (``LlamaRotaryEmbedding.forward``; Phi-3 and
Qwen2 compute the same ``cos``/``sin``, gpt-oss returns the half table without the concat).
transformers computes in float32 tensors where it uses tensors and in Python float64 where it
uses Python numbers; this module does the same, so its float32 results differ from
transformers' only where torch's own float32 ``pow``/``cos``/``sin`` kernels are not correctly
rounded (at most 1 ulp per call; this module rounds the exact float64 value instead).

Notation: ``b`` = RoPE base (theta), ``d`` = rotary dim (even), ``i = 0, 2, ..., d-2``,
``e_i = f32(i) / f32(d)`` (float32 division), ``p_i = f32(b ** e_i)`` and ``inv_i = 1 / p_i``
(``default``). All per-type results are float32 vectors of length ``d/2``. ``L`` is the
*run-time length* transformers uses: ``max(position_ids) + 1`` over the whole batch (not the
number of tokens, and not per row).

* ``default``: ``inv_i = 1 / b**e_i``; attention factor 1.
* ``linear``: ``inv_i = (1 / b**e_i) / factor``; attention factor 1. No run-time dependence.
* ``llama3`` (Llama 3.1+): ``lw = orig / low_freq_factor``, ``hw = orig / high_freq_factor``,
  ``wl_i = 2*pi / inv_i``; ``inv_i / factor`` where ``wl_i > lw``; ``inv_i`` where
  ``wl_i < hw``; otherwise ``(1 - s_i) * inv_i / factor + s_i * inv_i`` with
  ``s_i = (orig / wl_i - low_freq_factor) / (high_freq_factor - low_freq_factor)``.
  Attention factor 1. No run-time dependence.
* ``yarn``: ``factor`` (or ``max_position_embeddings / orig`` when absent); attention factor
  ``attention_factor`` if given, else ``m(factor, mscale) / m(factor, mscale_all_dim)`` when
  both ``mscale`` and ``mscale_all_dim`` are non-zero, else ``m(factor)``, with
  ``m(s, k=1) = 0.1*k*ln(s) + 1`` for ``s > 1`` and 1 otherwise. Correction range
  ``c(r) = d * ln(orig / (2*pi*r)) / (2 * ln b)``, ``lo = c(beta_fast or 32)``,
  ``hi = c(beta_slow or 1)``; with ``truncate`` (default true) ``lo = floor(lo)``,
  ``hi = ceil(hi)``; then ``lo = max(lo, 0)``, ``hi = min(hi, d - 1)``; if ``lo == hi``,
  ``hi += 0.001``. Ramp ``r_j = clip((j - lo) / (hi - lo), 0, 1)`` for ``j < d/2``,
  ``x_j = 1 - r_j``; ``inv_j = (1 / (factor * p_j)) * (1 - x_j) + (1 / p_j) * x_j``.
  No run-time dependence; the attention factor multiplies cos and sin (DeepSeek models also
  multiply the softmax scale by ``m(factor, mscale_all_dim)**2``: that is their attention
  module's business, see :func:`yarn_softmax_scale`).
* ``longrope`` (Phi-3): ``factor`` (or ``max_position_embeddings / orig`` when absent);
  attention factor ``attention_factor`` if given, else ``sqrt(1 + ln(factor) / ln(orig))``
  when ``factor > 1``, else 1 -- a constant, it does NOT depend on ``L``. Frequencies
  ``inv_i = 1 / (f32(ext_i) * b**e_i)`` with ``ext = long_factor`` when ``L > orig`` and
  ``short_factor`` otherwise. transformers re-decides on every forward call (stateless): the
  whole call, all positions, uses the long set as soon as ``max(position_ids) + 1 > orig``,
  and goes back to the short set when a later call is short again. Keys already in a KV cache
  keep the factors they were rotated with (transformers' Phi-3 ``generate`` drops the cache
  when a prompt first crosses ``orig``), so prefill-then-decode differs from one full run
  when the crossing happens during decoding. ONNX lowering: both constant tables and a
  ``Where(L > orig, long, short)`` on ``L = ReduceMax(position_ids) + 1``.
* ``dynamic`` (NTK): ``M = max_position_embeddings`` (the model's, not an original length),
  ``L' = max(L, M)``, ``b' = b * (factor * L' / M - (factor - 1)) ** (d / (d - 2))``,
  ``inv_i = 1 / b'**e_i``; attention factor 1. At init (``L`` absent) ``L' = M``, i.e.
  ``b' = b`` computed in Python float64. In the forward pass transformers computes ``b'``
  from a tensor ``L``, so ``factor * L' / M - (factor - 1)``, its power and ``b * (...)``
  are float32 (``runtime=True`` here). transformers' module is *stateful*: it keeps
  ``max_seq_len_cached`` (initially ``M``) and recomputes the frequencies only when a call's
  ``L`` exceeds it (then caches that ``L``); it restores the init frequencies only when a
  call's ``L < M`` after having grown. So a call's frequencies depend on the largest ``L``
  seen so far since the last reset, not on the call's own ``L`` (a short call with
  ``M <= L < max seen`` keeps the larger-length frequencies; see :class:`RotaryState`).
  Cached keys keep the frequencies of the step that rotated them, so token-by-token decoding
  past ``M`` differs from one full run. For a stateless ONNX lowering (one fresh call): compute
  ``b'`` at run time from ``L = ReduceMax(position_ids) + 1`` in float32, then
  ``inv = 1 / Pow(b', e)``, and ``Where(L > M, that, init table)`` (transformers never
  recomputes for ``L <= M``).

cos/sin (:func:`cos_sin`): ``ang = f32(position) * inv`` (float32, shape ``[..., d/2]``),
``emb = concat(ang, ang)`` (the half-split layout; the interleaved layout repeats each
element instead), ``cos = cos(emb) * attention_factor``, ``sin = sin(emb) * attention_factor``
(float32 multiply): the attention factor scales q and k, hence the logits by its square.
The module then casts cos and sin to the activations' dtype (float16 models round them after
the factor is applied).

Version notes. The installed transformers 5.23.0 is the definition. An early 4.4x
``modeling_rope_utils.py`` (the version that still had an ``ntk`` type) differs: yarn took its
correction range from ``max_position_embeddings`` (not the original length), had no ``mscale``,
``mscale_all_dim`` or ``truncate`` (always floor/ceil) and always used ``0.1*ln(factor) + 1``;
longrope's init picked the long factors whenever the model was extended (the per-call switch
lived in Phi-3's own rotary module) and took ``factor = max / original`` whenever the config had
``original_max_position_embeddings``; the dynamic base used a Python length (float64). Later 4.x
modules formed the angles as a float32 ``inv_freq @ position_ids`` matmul with inner size 1,
the same numbers as 5.23's elementwise product. 5.23 only *warns* on bad factor/beta/list values
and unknown keys (it raises only for missing keys; Phi-3's config raises on bad list lengths);
:func:`validate_rope_scaling` reports all of them as problems, except the yarn
``factor != max_position_embeddings / orig`` warning, which Qwen3's recommended yarn config
triggers and so is not an error here. 5.23 also reads yarn's ``truncate`` from the top-level
``rope_parameters`` even for per-layer-type configs, and its Phi-3 config's own
``original_max_position_embeddings`` overrides the one inside ``rope_parameters``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import SpecError

__all__ = [
    "ROPE_TYPES",
    "RopeScaling",
    "RotaryState",
    "allowed_keys",
    "attention_factor",
    "cos_sin",
    "inv_freq",
    "validate_rope_scaling",
    "yarn_get_mscale",
    "yarn_softmax_scale",
]

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")

# (required, optional) keys per type, as transformers' ``_validate_<type>_rope_parameters``
# minus ``rope_theta``/``partial_rotary_factor`` (attndsl's rope ``theta``/``dim`` carry them)
# plus ``max_position_embeddings`` (a model-config field those types read).
_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "default": (frozenset({"rope_type"}), frozenset()),
    "linear": (frozenset({"rope_type", "factor"}), frozenset()),
    "dynamic": (frozenset({"rope_type", "factor", "max_position_embeddings"}), frozenset()),
    "llama3": (frozenset({"rope_type", "factor", "original_max_position_embeddings",
                          "low_freq_factor", "high_freq_factor"}),
               frozenset({"max_position_embeddings"})),
    "yarn": (frozenset({"rope_type", "factor", "original_max_position_embeddings"}),
             frozenset({"attention_factor", "beta_fast", "beta_slow", "mscale",
                        "mscale_all_dim", "truncate", "max_position_embeddings"})),
    "longrope": (frozenset({"rope_type", "short_factor", "long_factor",
                            "original_max_position_embeddings"}),
                 frozenset({"attention_factor", "factor", "max_position_embeddings"})),
}

Problem = tuple[str, str, str]  # (key, message, hint)


def allowed_keys(rope_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """The (required, optional) keys of a rope type's scaling mapping."""
    return _KEYS[rope_type]


@dataclass(frozen=True)
class RopeScaling:
    """A validated RoPE scaling (field names and meanings as transformers' ``rope_parameters``).

    ``max_position_embeddings`` is the model config's field: ``dynamic`` needs it, ``yarn`` and
    ``longrope`` read it when ``factor`` is absent, ``llama3`` only checks it.
    """

    rope_type: str = "default"
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # a RopeScaling is always computable: the same checks as a spec mapping (no dim here)
        problems = validate_rope_scaling(self.to_mapping())
        if problems:
            key, msg, hint = problems[0]
            raise SpecError(f"rope scaling '{key}': {msg}", hint=hint)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any], dim: int | None = None) -> RopeScaling:
        """Build from a transformers-style mapping (``type`` accepted for ``rope_type``).

        Raises :class:`SpecError` (no span: the caller knows the spec line) on the first
        problem :func:`validate_rope_scaling` finds.
        """
        problems = validate_rope_scaling(params, dim=dim)
        if problems:
            key, msg, hint = problems[0]
            raise SpecError(f"rope scaling '{key}': {msg}", hint=hint)
        p = dict(params)
        if "type" in p:
            p.setdefault("rope_type", p.pop("type"))
        for k in ("short_factor", "long_factor"):
            if k in p:
                p[k] = tuple(p[k])
        return cls(**p)

    def to_mapping(self) -> dict[str, Any]:
        """The non-None fields as a transformers-style mapping (lists for the factor lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def problems(self, dim: int | None = None) -> list[Problem]:
        """:func:`validate_rope_scaling` of :meth:`to_mapping`."""
        return validate_rope_scaling(self.to_mapping(), dim=dim)


# ----------------------------------------------------------------------------- validation

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_rope_scaling(params: Mapping[str, Any], dim: int | None = None) -> list[Problem]:
    """Check a scaling mapping as transformers 5.23's ``validate_rope`` does, strictly.

    Returns ``(key, message, hint)`` triples (empty when valid): the key is the offending (or
    missing) key so a compiler can point at its spec line. Checks: known ``rope_type``;
    required and unknown keys per type; ``factor >= 1``; positive integer lengths;
    ``high_freq_factor > low_freq_factor``; ``beta_fast >= beta_slow`` (defaults 32 and 1);
    ``attention_factor >= 0``; ``truncate`` a bool; factor lists of ``dim // 2`` positive
    numbers; ``original < max_position_embeddings`` for llama3 when both are given;
    ``longrope`` needs ``factor`` or ``max_position_embeddings``; ``dim`` (when given) even and
    positive, and > 2 for ``dynamic`` (transformers divides by ``dim - 2``).
    """
    out: list[Problem] = []
    p = _with_rope_type(params, out)
    if p is None:
        return out
    _check_keys(p, out)
    _check_numbers(p, out)
    _check_type_rules(p, dim, out)
    _check_dim(p["rope_type"], dim, out)
    return out


def _with_rope_type(params: Mapping[str, Any], out: list[Problem]) -> dict[str, Any] | None:
    """The mapping with ``rope_type`` set (the legacy ``type`` folded in), or None after an
    error that stops the checks."""
    p = dict(params)
    if "type" in p:
        if "rope_type" in p and p["rope_type"] != p["type"]:
            out.append(("type", f"'type' ({p['type']!r}) contradicts rope_type "
                        f"({p['rope_type']!r})", "keep only rope_type"))
            return None
        p.setdefault("rope_type", p.pop("type"))
        p.pop("type", None)
    rt = p.get("rope_type", "default")
    if not isinstance(rt, str) or rt not in _KEYS:
        out.append(("rope_type", f"unknown rope_type {rt!r}",
                    "one of: " + ", ".join(ROPE_TYPES)))
        return None
    p["rope_type"] = rt
    return p


def _check_keys(p: dict[str, Any], out: list[Problem]) -> None:
    """Required and unknown keys of the type."""
    rt = p["rope_type"]
    required, optional = _KEYS[rt]
    for k in sorted(required - set(p)):
        out.append((k, f"rope_type '{rt}' needs '{k}'", f"add {k}: <value>"))
    for k in sorted(set(p) - required - optional):
        hint = f"'{rt}' takes: " + ", ".join(sorted((required | optional) - {"rope_type"}))
        if k in ("rope_theta", "partial_rotary_factor"):
            hint = "set the RoPE base and rotated width with the rope's theta and dim"
        out.append((k, f"unknown key '{k}' for rope_type '{rt}'", hint))


def _check_numbers(p: dict[str, Any], out: list[Problem]) -> None:
    """Types and ranges of the numeric keys (a bad length is set to None for later checks)."""

    def num(key: str, lo: float | None = None, strict: bool = False, what: str = "") -> None:
        v = p.get(key)
        if v is None:
            return
        if not _is_num(v):
            out.append((key, f"{key} must be a number, got {v!r}", f"e.g. {key}: 1.0"))
        elif lo is not None and (v <= lo if strict else v < lo):
            out.append((key, f"{key} must be {'>' if strict else '>='} {lo}, got {v!r}", what))

    num("factor", 1.0, what="factor is the context-extension ratio (>= 1)")
    for k in ("original_max_position_embeddings", "max_position_embeddings"):
        v = p.get(k)
        if v is not None and (not _is_int(v) or v <= 0):
            out.append((k, f"{k} must be a positive integer, got {v!r}", f"e.g. {k}: 4096"))
            p[k] = None
    num("attention_factor", 0.0, what="attention_factor scales cos and sin")
    for k in ("low_freq_factor", "high_freq_factor"):  # llama3 divides by both
        num(k, 0.0, strict=True, what="Llama 3.1 uses low_freq_factor 1 and high_freq_factor 4")
    for k in ("mscale", "mscale_all_dim"):
        num(k)
    for k in ("beta_fast", "beta_slow"):  # yarn takes their logarithm; 0 means the default
        num(k, 0.0, what="defaults: beta_fast 32, beta_slow 1")


def _check_type_rules(p: dict[str, Any], dim: int | None, out: list[Problem]) -> None:
    """What one type requires between its keys (yarn, llama3, longrope)."""
    rt = p["rope_type"]
    if rt == "yarn":
        bf = p.get("beta_fast") or 32  # transformers' `or`: 0 and None mean the default
        bs = p.get("beta_slow") or 1
        if _is_num(bf) and _is_num(bs) and bf < bs:
            out.append(("beta_fast", f"beta_fast ({bf}) must be >= beta_slow ({bs})",
                        "defaults: beta_fast 32, beta_slow 1"))
    if "truncate" in p and not isinstance(p["truncate"], bool):
        out.append(("truncate", f"truncate must be true or false, got {p['truncate']!r}", ""))
    if rt == "llama3":
        lo, hi = p.get("low_freq_factor"), p.get("high_freq_factor")
        if _is_num(lo) and _is_num(hi) and hi <= lo:
            out.append(("high_freq_factor", f"high_freq_factor ({hi}) must be greater than "
                        f"low_freq_factor ({lo})", "Llama 3.1 uses 1 and 4"))
        om, mp = p.get("original_max_position_embeddings"), p.get("max_position_embeddings")
        if _is_int(om) and _is_int(mp) and om >= mp:
            out.append(("original_max_position_embeddings",
                        f"original_max_position_embeddings ({om}) must be less than "
                        f"max_position_embeddings ({mp})", ""))
    if rt == "longrope":
        _check_longrope(p, dim, out)


def _check_longrope(p: dict[str, Any], dim: int | None, out: list[Problem]) -> None:
    for k in ("short_factor", "long_factor"):
        v = p.get(k)
        if v is None:
            continue
        if (not isinstance(v, Sequence) or isinstance(v, str)
                or not all(_is_num(x) and x > 0 for x in v)):
            out.append((k, f"{k} must be a list of positive numbers", ""))
        elif dim is not None and len(v) != dim // 2:
            out.append((k, f"{k} must have dim/2 = {dim // 2} entries, got {len(v)}",
                        "one factor per rotated frequency"))
    if p.get("factor") is None and p.get("max_position_embeddings") is None:
        out.append(("factor", "longrope needs factor or max_position_embeddings (factor "
                    "defaults to max_position_embeddings / original_max_position_embeddings)",
                    "add factor: <max / original>"))


def _check_dim(rt: str, dim: int | None, out: list[Problem]) -> None:
    if dim is None:
        return
    if not _is_int(dim) or dim <= 0 or dim % 2:
        out.append(("dim", f"rotary dim must be a positive even integer, got {dim!r}", ""))
    elif rt == "dynamic" and dim <= 2:
        out.append(("dim", "dynamic NTK needs a rotary dim > 2 (its base exponent is "
                    "dim / (dim - 2))", ""))


# ----------------------------------------------------------------------------- numbers

_F32 = np.float32


def _pow32(base: Any, exps: np.ndarray) -> np.ndarray:
    """float32 ``base ** exps`` rounded from float64 (torch's kernel is within 1 ulp of it)."""
    return np.power(np.float64(_F32(base)), exps.astype(np.float64)).astype(_F32)


def _exponents(dim: int) -> np.ndarray:
    # torch.arange(0, dim, 2, dtype=int64).float() / dim: float32 true division
    return np.arange(0, dim, 2, dtype=np.int64).astype(_F32) / _F32(dim)


def _rdiv(num: float, x: np.ndarray) -> np.ndarray:
    # torch computes `scalar / tensor` as `tensor.reciprocal() * scalar`
    return (_F32(1.0) / x) * _F32(num)


def _default(base: float, dim: int) -> np.ndarray:
    return _rdiv(1.0, _pow32(base, _exponents(dim)))


def yarn_get_mscale(scale: float, mscale: float = 1.0) -> float:
    """transformers' yarn ``get_mscale``: ``0.1 * mscale * ln(scale) + 1`` for ``scale > 1``."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_softmax_scale(scaling: RopeScaling, scale: float) -> float:
    """DeepSeek V2/V3's softmax scale (their ``yarn_apply_mscale``): for any non-default type
    with a non-zero ``mscale_all_dim``, ``scale * m * m`` with ``m = m(factor, mscale_all_dim)``
    (multiplied in that order, as transformers does); otherwise ``scale`` unchanged."""
    if scaling.rope_type != "default" and scaling.mscale_all_dim:
        m = yarn_get_mscale(scaling.factor, scaling.mscale_all_dim)
        return scale * m * m
    return scale


def _factor_or_ratio(s: RopeScaling) -> float:
    if s.factor is not None:
        return s.factor
    if s.max_position_embeddings is None or s.original_max_position_embeddings is None:
        raise SpecError(f"rope_type '{s.rope_type}' needs factor or max_position_embeddings")
    return s.max_position_embeddings / s.original_max_position_embeddings


def _dynamic_base(s: RopeScaling, base: float, dim: int, seq_len: int | None,
                  runtime: bool) -> Any:
    m = s.max_position_embeddings
    if m is None or s.factor is None:
        raise SpecError("rope_type 'dynamic' needs factor and max_position_embeddings")
    factor = s.factor
    if not runtime or seq_len is None:
        # Python float64 arithmetic, as at init (seq_len None -> M)
        length = m if seq_len is None else max(int(seq_len), m)
        return base * ((factor * length / m) - (factor - 1)) ** (dim / (dim - 2))
    # dynamic_frequency_update passes a 0-dim int64 tensor: everything below is float32
    length = _F32(max(int(seq_len), m))
    t = (_F32(factor) * length) / _F32(m)
    t = t - _F32(factor - 1)
    # torch's pow(float32 tensor, Python float) keeps the exponent in double
    t = _F32(np.power(np.float64(t), dim / (dim - 2)))
    return _F32(base) * t


def inv_freq(scaling: RopeScaling, base: float, dim: int, seq_len: int | None = None,
             *, runtime: bool = False) -> np.ndarray:
    """The float32 inverse frequencies ``[dim // 2]`` of transformers' rope init function.

    ``seq_len`` is the init function's argument: used by ``dynamic`` (NTK length, floored at
    ``max_position_embeddings``) and ``longrope`` (long factors when ``> original``); the other
    types ignore it. ``runtime=True`` computes the ``dynamic`` base as transformers' forward
    pass does (float32, from a tensor length) instead of in Python float64.
    """
    rt = scaling.rope_type
    if rt == "default":
        return _default(base, dim)
    if rt == "linear":
        return _default(base, dim) / _F32(scaling.factor)
    if rt == "dynamic":
        return _rdiv(1.0, _pow32(_dynamic_base(scaling, base, dim, seq_len, runtime),
                                 _exponents(dim)))
    if rt == "llama3":
        return _llama3(scaling, base, dim)
    if rt == "yarn":
        return _yarn(scaling, base, dim)
    if rt == "longrope":
        orig = scaling.original_max_position_embeddings
        use_long = bool(seq_len) and seq_len > orig
        ext = np.asarray(scaling.long_factor if use_long else scaling.short_factor, dtype=_F32)
        return _rdiv(1.0, ext * _pow32(base, _exponents(dim)))
    raise SpecError(f"unknown rope_type {rt!r}")


def _llama3(s: RopeScaling, base: float, dim: int) -> np.ndarray:
    inv = _default(base, dim)
    factor, low, high = s.factor, s.low_freq_factor, s.high_freq_factor
    old = s.original_max_position_embeddings
    low_wl, high_wl = old / low, old / high
    wl = _rdiv(2 * math.pi, inv)
    inv_l = np.where(wl > _F32(low_wl), inv / _F32(factor), inv)
    smooth = (_rdiv(old, wl) - _F32(low)) / _F32(high - low)
    smoothed = ((_F32(1.0) - smooth) * inv_l) / _F32(factor) + smooth * inv_l
    medium = ~(wl < _F32(high_wl)) & ~(wl > _F32(low_wl))
    return np.where(medium, smoothed, inv_l).astype(_F32)


def _yarn(s: RopeScaling, base: float, dim: int) -> np.ndarray:
    factor = _factor_or_ratio(s)
    orig = s.original_max_position_embeddings
    beta_fast = s.beta_fast or 32
    beta_slow = s.beta_slow or 1

    def corr_dim(rot: float) -> float:
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
    if s.truncate is None or s.truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001  # transformers: "prevent singularity"
    ramp = np.clip((np.arange(dim // 2, dtype=_F32) - _F32(lo)) / _F32(hi - lo), 0, 1)
    extra = _F32(1.0) - ramp
    pos = _pow32(base, _exponents(dim))
    inv_extra = _rdiv(1.0, pos)
    inv_inter = _rdiv(1.0, _F32(factor) * pos)
    return (inv_inter * (_F32(1.0) - extra) + inv_extra * extra).astype(_F32)


def attention_factor(scaling: RopeScaling, seq_len: int | None = None) -> float:
    """The factor transformers multiplies into cos and sin (``attention_scaling``).

    Constant for every type (``seq_len`` is accepted for symmetry with :func:`inv_freq`:
    transformers' ``dynamic`` update re-reads it, and it is always 1.0 there).
    """
    rt = scaling.rope_type
    if rt == "yarn":
        if scaling.attention_factor is not None:
            return scaling.attention_factor
        factor = _factor_or_ratio(scaling)
        if scaling.mscale and scaling.mscale_all_dim:
            return float(yarn_get_mscale(factor, scaling.mscale)
                         / yarn_get_mscale(factor, scaling.mscale_all_dim))
        return yarn_get_mscale(factor)
    if rt == "longrope":
        if scaling.attention_factor is not None:
            return scaling.attention_factor
        factor = _factor_or_ratio(scaling)
        if factor <= 1.0:
            return 1.0
        return math.sqrt(1 + math.log(factor)
                         / math.log(scaling.original_max_position_embeddings))
    return 1.0


def cos_sin(scaling: RopeScaling, base: float, dim: int, positions: Any,
            seq_len: int | None = None, *, dtype: Any = np.float32,
            interleaved: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` ``[..., dim]`` as a fresh transformers rotary module's forward returns.

    ``positions``: integer array (any shape, e.g. ``[batch, seq]``). ``seq_len`` is the run-time
    length that picks the frequencies; ``None`` means transformers' ``max(positions) + 1``.
    ``dynamic`` uses the float32 run-time base when ``seq_len > max_position_embeddings`` and
    the init table otherwise (what one call on a fresh module does; :class:`RotaryState` keeps
    transformers' state across calls); ``longrope`` picks long/short by ``seq_len > original``.
    ``dtype=np.float32`` rounds as transformers does (``np.float16``: then cast, as the module
    does for float16 activations); ``np.float64`` keeps the same float32 frequencies but forms
    angles, cos, sin and the factor product in float64 (an oracle).
    ``interleaved`` lays each angle out twice in a row instead of ``concat(ang, ang)``.
    """
    pos = np.asarray(positions)
    if seq_len is None:
        seq_len = int(pos.max()) + 1 if pos.size else 0
    inv = _call_inv_freq(scaling, base, dim, seq_len)
    return _cos_sin_from(inv, attention_factor(scaling, seq_len), pos, dtype, interleaved)


def _call_inv_freq(scaling: RopeScaling, base: float, dim: int, seq_len: int) -> np.ndarray:
    if scaling.rope_type == "dynamic":
        if seq_len > scaling.max_position_embeddings:
            return inv_freq(scaling, base, dim, seq_len, runtime=True)
        return inv_freq(scaling, base, dim)
    if scaling.rope_type == "longrope":
        orig = scaling.original_max_position_embeddings
        return inv_freq(scaling, base, dim, orig + 1 if seq_len > orig else None)
    return inv_freq(scaling, base, dim)


def _cos_sin_from(inv: np.ndarray, att: float, pos: np.ndarray, dtype: Any,
                  interleaved: bool) -> tuple[np.ndarray, np.ndarray]:
    if np.dtype(dtype) in (np.float32, np.float16):
        ang = pos.astype(_F32)[..., None] * inv
        # correctly rounded cos/sin of the float32 angle (torch's kernels are within 1 ulp)
        c = np.cos(ang.astype(np.float64)).astype(_F32) * _F32(att)
        s = np.sin(ang.astype(np.float64)).astype(_F32) * _F32(att)
        c, s = c.astype(dtype), s.astype(dtype)
    else:
        ang = pos.astype(np.float64)[..., None] * inv.astype(np.float64)
        c, s = np.cos(ang) * att, np.sin(ang) * att
    if interleaved:
        return np.repeat(c, 2, axis=-1), np.repeat(s, 2, axis=-1)
    return np.concatenate([c, c], axis=-1), np.concatenate([s, s], axis=-1)


class RotaryState:
    """transformers' stateful rotary module across forward calls (``dynamic_rope_update``).

    Only ``dynamic`` keeps state: ``max_seq_len_cached`` starts at ``max_position_embeddings``
    (M); a call with ``L = max(position_ids) + 1 > max_seq_len_cached`` recomputes the table
    for ``L`` (float32 run-time base) and caches ``L``; a call with ``L < M`` after growth
    restores the init table and ``max_seq_len_cached = M``. Every other type is stateless
    (``longrope`` re-decides long/short on each call).
    """

    def __init__(self, scaling: RopeScaling, base: float, dim: int):
        self.scaling, self.base, self.dim = scaling, base, dim
        self.original_inv_freq = inv_freq(scaling, base, dim)
        self.inv_freq = self.original_inv_freq
        m = scaling.max_position_embeddings
        self.original_max_seq_len = m
        self.max_seq_len_cached = m

    def __call__(self, positions: Any, *, dtype: Any = np.float32,
                 interleaved: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One forward call: update the state as transformers does, then ``(cos, sin)``."""
        pos = np.asarray(positions)
        seq_len = int(pos.max()) + 1
        s = self.scaling
        if s.rope_type == "dynamic":
            cached = self.max_seq_len_cached
            if seq_len > cached:  # growth
                self.inv_freq = inv_freq(s, self.base, self.dim, seq_len, runtime=True)
                self.max_seq_len_cached = seq_len
            # transformers tests the value read before the growth branch
            if seq_len < self.original_max_seq_len and cached > self.original_max_seq_len:
                self.inv_freq = self.original_inv_freq
                self.max_seq_len_cached = self.original_max_seq_len
            inv = self.inv_freq
        else:
            inv = _call_inv_freq(s, self.base, self.dim, seq_len)
        return _cos_sin_from(inv, attention_factor(s), pos, dtype, interleaved)
