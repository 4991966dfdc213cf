"""The ``ort`` target: ONNX Runtime's fused attention kernels where a block maps onto one of
them exactly, the portable lowering (standard ops) for the other blocks.

Per block, causal masks try GQA first and the others MHA first, then ONNX Attention
(``match_*`` returns a plan or the reason it does not apply, ``emit_*`` builds the nodes).
Only an exact kernel is a candidate; it is then weighed against the portable plan: under
``--sparse auto`` by the cost model measured on this machine (``ort_cost.py``: the cheaper
estimate wins, the kernel within 10%, and ``--explain`` gives both), under ``--sparse
dense`` / ``block`` and where the cost model has no constants by a fixed rule
(``portable_skips_more``). The first exact kernel that wins is used; when none does, the
block is portable:

- ``com.microsoft.GroupQueryAttention``: self-attention over one query/key length, causal
  (attndsl's bottom-right alignment, which GQA shares), causal with a window (``sliding(w)``
  is ``local_window_size = w``: keys q-w+1..q, see docs/runtimes.md), or non-causal without a
  cache; head_dim a multiple of 8 (CPU kernel), v_head_dim = head_dim; score ``softcap(c)``
  (attribute, applied before the bias) then additive ``alibi`` / ``relative_bias``
  (``attention_bias``). RoPE is fused (``do_rotary``) when its dim is a multiple of 16 (the
  CPU kernel wants cos/sin widths that are multiples of 8), else it runs as
  ``com.microsoft.RotaryEmbedding`` first. Scaled RoPE feeds its own cos/sin tables (the
  scaled frequencies, times the attention factor; dynamic / longrope at the block's run-time
  length) as the caches, which the kernels apply exactly as the portable rotation does; RoPE
  with position ids stays portable (no input of these kernels takes them). With a cache the
  same graph serves the prompt (past_len 0) and decode steps; ``query_seqlens`` (= the step
  length) lets a multi-token step with past context run at batch > 1 (without it the kernel
  refuses). Rows are never fully masked (the query's own key is always allowed).
- ``com.microsoft.MultiHeadAttention``: kv_heads = heads, no causal/window mask (GQA's), at
  most ``padding(len)`` as a 2-D key padding mask; self- or cross-attention. Its default
  ``mask_filter_value`` (-10000) leaks for large logits, so attndsl sets the lowest float32; a
  row is then fully masked only when ``len[b] <= 0``, and those rows are zeroed after the
  kernel (it would average them). Cache only when v_head_dim = head_dim. Additive ``alibi`` /
  ``relative_bias`` as ``attention_bias``; no softcap.
- ONNX ``Attention`` (opset 23/24, the model's opset): any kv_heads and head sizes, softcap,
  ``causal`` (``is_causal``, bottom-right like attndsl), input-driven masks (``padding``,
  ``mask(m)``, ``document``) and additive scores incl. ``bias(t)`` as ``attn_mask``; the
  probabilities (``attn.weights``) from ``qk_matmul_output_mode=3``. Its specification gives
  fully masked rows a zero output (as docs/language.md requires). No windows
  (``left_window_size`` is Attention-25, which docs/runtimes.md shows ignored or failing on
  several runtimes).

Position-sparse masks (chunk, dilated, strided, global, random, lookahead windows, ...) stay
portable. All fused ops run in the model's float type (fp16 models: fp16 kernels).

``onnx.checker.check_model(full_check=True)`` still runs on the result: it checks every
standard node and the graph, and skips the ``com.microsoft`` nodes (the onnx package has no
schemas for that domain); the ort target's tests check those against ONNX Runtime's schemas
and run them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..features import nodes as mn
from ..features.block_base import FUSED_OK
from ..features.blocks.rope import rope_tables, run_length
from ..features.registry import block_feature_of, rule
from ..features.text import format_leaf, format_mask
from ..ir.nodes import Block
from . import ort_cost
from .builder import FLOAT
from .mask_ops import MaskLowering, lower_scores
from .onnx_portable import BlockExplanation, PortableLowering
from .positions import Positions

MS_DOMAIN = "com.microsoft"
GQA = "com.microsoft.GroupQueryAttention"
MHA = "com.microsoft.MultiHeadAttention"
ATTENTION_OPSET = 23
INT32 = TensorProto.INT32
LOWEST = float(np.finfo(np.float32).min)


def _roles(node: object) -> tuple[str, ...]:
    """The roles of the inputs a node reads ("lengths", "ids", "cells")."""
    return tuple(role for _, role in rule("inputs", node)(node))


# ---------------------------------------------------------------- block analysis
@dataclass(frozen=True)
class Pattern:
    """A mask seen by the fused kernels: causal (k <= q), a window (with causal: q - k <
    window) and the input-driven terms (padding, mask(m), document) that remain."""

    causal: bool = False
    window: int | None = None
    inputs: tuple[mn.Mask, ...] = ()


def _terms(m: mn.Mask) -> list[mn.Mask]:
    if isinstance(m, mn.And):
        return [t for term in m.terms for t in _terms(term)]
    return [m]


def mask_pattern(mask: mn.Mask) -> Pattern | str:
    """The block's mask as a Pattern, or why no fused kernel expresses it."""
    lo, hi = -np.inf, np.inf  # bounds on q - k
    inputs: list[mn.Mask] = []
    for t in _terms(mask):
        fused = rule("ort", t)(t)  # bounds on q - k, "input", or None
        if fused is None:
            return f"mask {format_mask(t)} has no fused equivalent"
        if fused == "input":
            inputs.append(t)
        else:
            lo, hi = max(lo, fused[0]), min(hi, fused[1])
    text = format_mask(mask)
    if lo > hi or lo > 0:
        return f"mask {text} excludes the query's own position (rows may be empty)"
    if lo < 0 and (lo > -np.inf or hi < np.inf):
        return f"mask {text} attends to later keys within a bound (no fused window for that)"
    causal = lo == 0
    window = int(hi) + 1 if causal and hi < np.inf else None
    return Pattern(causal, window, tuple(inputs))


def split_scores(score: tuple[mn.Score, ...]) -> tuple[float | None, tuple[mn.Score, ...]] | str:
    """(softcap, additive modifiers) when a softcap comes first, as the kernels apply it."""
    cap: float | None = None
    additive: list[mn.Score] = []
    for s in score:
        kind, value = rule("ort", s)(s)
        if kind == "softcap":
            if cap is not None or additive:
                return ("softcap after another score modifier (the kernels apply softcap "
                        "first)")
            cap = value
        else:
            additive.append(s)
    return cap, tuple(additive)


def feature_reason(b: Block, fused: tuple[str, ...] = ()) -> str | None:
    """Why a block feature keeps the block off a fused kernel (its ``ort`` rule), or None
    when every feature maps onto what the kernel computes: every kernel takes ``FUSED_OK``
    ("rotary": the kernels' rotary embedding; "projections": a feature acting in the
    projections, computed as the portable path does), ``fused`` lists the further answers
    this kernel takes ("head_sink": attention sinks, GroupQueryAttention only)."""
    for f in b.features:
        why = block_feature_of(f).ort(f, b)
        if why == "head_sink" and why not in fused:
            return "attention sinks (only GroupQueryAttention has a sink input)"
        if why not in FUSED_OK + fused:
            return why
    return None


def _head_sink(b: Block) -> tuple[str, bool]:
    """GroupQueryAttention's ``head_sink`` input (the feature's one weight, [heads]) and
    ``smooth_softmax`` (a sink without weight: logit 0) for a block with sinks."""
    for f in b.features:
        feature = block_feature_of(f)
        if feature.ort(f, b) == "head_sink":
            names = list(feature.weights(f, b))
            return (names[0], False) if names else ("", True)
    return "", False


def _wants_weights(low: PortableLowering, b: Block) -> bool:
    return any(o.stream == b.name and o.attr == "weights" for o in low.model.outputs)


def _describe(b: Block, pattern: Pattern, cap: float | None,
              additive: tuple[mn.Score, ...]) -> list[str]:
    words = []
    if pattern.window is not None:
        words.append(f"sliding window {pattern.window}")
    for m in pattern.inputs:
        words.append(format_leaf(m))
    if cap is not None:
        words.append(f"softcap {cap:g}")
    words += [_score_text(s) for s in additive]
    if b.cache:
        words.append("KV cache")
    return words


def _score_text(s: mn.Score) -> str:
    return rule("ort", s)(s)[1]


# ---------------------------------------------------------------- GroupQueryAttention
@dataclass(frozen=True)
class GqaPlan:
    causal: bool
    window: int | None
    softcap: float | None
    additive: tuple[mn.Score, ...]
    fused_rope: bool
    reason: str


def match_gqa(low: PortableLowering, b: Block) -> GqaPlan | str:
    """GroupQueryAttention when the block maps exactly, else why not."""
    if (why := feature_reason(b, ("head_sink",))) is not None:
        return why
    if not low.model.has_diagonal(b):
        return ("cross-attention" if not b.self_attention else
                "query and key streams may differ in length")
    if _wants_weights(low, b):
        return "the probabilities are an output"
    if b.v_head_dim != b.head_dim:
        return f"v_head_dim {b.v_head_dim} != head_dim {b.head_dim}"
    if b.head_dim % 8:
        return f"head_dim {b.head_dim} is not a multiple of 8 (ORT CPU kernel)"
    if b.scale == 0:
        return "scale 0 (the kernel reads 0 as 1/sqrt(D))"
    pattern = mask_pattern(b.mask)
    if isinstance(pattern, str):
        return pattern
    if pattern.inputs:
        return f"mask {format_leaf(pattern.inputs[0])} has no GroupQueryAttention input"
    if not pattern.causal and b.cache:
        return ("non-causal with a KV cache (GQA needs causal for multi-token steps at "
                "batch > 1)")
    scores = split_scores(b.score)
    if isinstance(scores, str):
        return scores
    cap, additive = scores
    if any("cells" in _roles(s) for s in additive):
        return "bias(t) may be -inf on a whole row (GQA would not give 0)"
    fused_rope = b.rope is not None and b.rope.dim % 16 == 0
    kind = "causal" if pattern.causal else "non-causal"
    words = [f"{kind} GQA {b.heads}/{b.kv_heads}"] + _describe(b, pattern, cap, additive)
    if b.rope is not None:
        words.append(_rope_words(b) + (
            " (fused)" if fused_rope else " (com.microsoft.RotaryEmbedding: dim not a "
            "multiple of 16)"))
    return GqaPlan(pattern.causal, pattern.window, cap, additive, fused_rope,
                   ", ".join(words))


def emit_gqa(low: PortableLowering, b: Block, plan: GqaPlan) -> None:
    g = low.g
    q, k, v, pos, past = _project(low, b)
    batch = g.shape(low.streams[b.query], 0, 1)
    total = pos.k_total
    seqlens = g.op("Expand", g.cast(g.sub(total, g.scalar(1, "int64")), INT32), batch)
    cos = sin = ""
    if b.rope is not None and plan.fused_rope:
        cos, sin = _rope_cache(low, b, total, pos)
    elif b.rope is not None:
        q, k = _rotary(low, b, q, b.heads, pos, past, True), _rotary(low, b, k, b.kv_heads,
                                                                       pos, past, False)
    bias = _additive_bias(low, b, plan.additive, pos)
    qsl = ""
    if b.cache and low.model.static_size(low.model.stream_dims(b.query)[0]) != 1:
        qsl = g.op("Expand", g.cast(g.dim(low.streams[b.query], 1), INT32), batch)
    pk, pv = (f"{b.name}.past_key", f"{b.name}.past_value") if b.cache else ("", "")
    sink, smooth = _head_sink(b)
    inputs = [q, k, v, pk, pv, seqlens, g.cast(total, INT32), cos, sin, "", bias,
              sink, "", "", "", "", qsl]
    while not inputs[-1]:
        inputs.pop()
    # present_key/present_value always: without them ORT 1.32's CPU kernel takes a slower
    # path with an S x S buffer per head (figures: benchmarks/README.md)
    outs = g.op_multi(
        "GroupQueryAttention", *inputs, n_out=3, domain=MS_DOMAIN,
        num_heads=b.heads, kv_num_heads=b.kv_heads, scale=float(b.scale),
        softcap=plan.softcap, local_window_size=plan.window,
        causal=None if plan.causal else 0, do_rotary=1 if cos else None,
        rotary_interleaved=1 if cos and b.rope.interleaved else None,
        smooth_softmax=1 if smooth else None)
    _finish(low, b, outs[0], None, outs[1:] if b.cache else [])


# ---------------------------------------------------------------- MultiHeadAttention
@dataclass(frozen=True)
class MhaPlan:
    padding: str | None
    additive: tuple[mn.Score, ...]
    reason: str


def match_mha(low: PortableLowering, b: Block) -> MhaPlan | str:
    """MultiHeadAttention when the block maps exactly, else why not."""
    if (why := feature_reason(b)) is not None:
        return why
    if b.kv_heads != b.heads:
        return f"kv_heads {b.kv_heads} != heads {b.heads}"
    if _wants_weights(low, b):
        return "the probabilities are an output"
    if b.cache and b.v_head_dim != b.head_dim:
        return "a KV cache with v_head_dim != head_dim"
    if b.scale == 0:
        return "scale 0 (the kernel reads 0 as 1/sqrt(D))"
    pattern = mask_pattern(b.mask)
    if isinstance(pattern, str):
        return pattern
    if pattern.causal:
        return "causal (GQA's mapping; MultiHeadAttention would compute every pair)"
    if any(_roles(m) != ("lengths",) for m in pattern.inputs) or len(pattern.inputs) > 1:
        return f"mask {format_mask(b.mask)} has no MultiHeadAttention input"
    scores = split_scores(b.score)
    if isinstance(scores, str):
        return scores
    cap, additive = scores
    if cap is not None:
        return "softcap (MultiHeadAttention has none)"
    if any("cells" in _roles(s) for s in additive):
        return "bias(t) may be -inf on a whole row (MultiHeadAttention would not give 0)"
    padding = pattern.inputs[0].input if pattern.inputs else None
    words = [f"MHA {b.heads} heads"] + _describe(b, pattern, None, additive)
    if b.rope is not None:
        words.append(f"{_rope_words(b)} (com.microsoft.RotaryEmbedding)")
    return MhaPlan(padding, additive, ", ".join(words))


def emit_mha(low: PortableLowering, b: Block, plan: MhaPlan) -> None:
    g = low.g
    q, k, v, pos, past = _project(low, b)
    if b.rope is not None:
        q, k = _rotary(low, b, q, b.heads, pos, past, True), _rotary(low, b, k, b.heads, pos,
                                                                       past, False)
    kpm = lens = ""
    if plan.padding is not None:
        lens = plan.padding
        if low.input_types[lens] != "int64":
            lens = g.cast(lens, TensorProto.INT64)
        kpm = g.cast(g.less(pos.k, g.unsqueeze(lens, [1])), INT32)  # [B, T]
    bias = _additive_bias(low, b, plan.additive, pos)
    pk, pv = (f"{b.name}.past_key", f"{b.name}.past_value") if b.cache else ("", "")
    inputs = [q, k, v, "", kpm, bias, pk, pv]
    while not inputs[-1]:
        inputs.pop()
    outs = g.op_multi("MultiHeadAttention", *inputs, n_out=3 if b.cache else 1,
                      domain=MS_DOMAIN, num_heads=b.heads, scale=float(b.scale),
                      mask_filter_value=LOWEST if kpm else None)
    o = outs[0]
    if lens:  # len[b] <= 0 masks every key of the batch's rows: output 0, not an average
        keep = g.op("Greater", g.reshape(lens, [-1, 1, 1]), g.scalar(0, "int64"))
        o = g.where(keep, o, g.scalar(0.0, _np_dtype(low)))
    _finish(low, b, o, None, outs[1:])


# ---------------------------------------------------------------- ONNX Attention
@dataclass(frozen=True)
class AttentionPlan:
    is_causal: bool
    softcap: float | None
    mask: mn.Mask | None  # lowered to attn_mask
    additive: tuple[mn.Score, ...]
    weights: bool
    reason: str


def match_attention(low: PortableLowering, b: Block) -> AttentionPlan | str:
    """ONNX Attention (the model's opset, 23 or 24) when the block maps exactly."""
    if (why := feature_reason(b)) is not None:
        return why
    if low.opset < ATTENTION_OPSET:
        return f"needs opset >= {ATTENTION_OPSET} (the model uses {low.opset})"
    pattern = mask_pattern(b.mask)
    if isinstance(pattern, str):
        return pattern
    if pattern.window is not None:
        return (f"sliding window {pattern.window} (Attention-{low.opset} has no window "
                "attribute; as a mask it would compute every pair)")
    scores = split_scores(b.score)
    if isinstance(scores, str):
        return scores
    cap, additive = scores
    is_causal = pattern.causal and low.model.has_diagonal(b)
    terms = list(pattern.inputs) + ([mn.Causal()] if pattern.causal and not is_causal else [])
    mask = None if not terms else terms[0] if len(terms) == 1 else mn.And(tuple(terms))
    weights = _wants_weights(low, b)
    words = [f"{'causal' if pattern.causal else 'dense'} {b.heads}/{b.kv_heads} heads"]
    words += _describe(b, pattern, cap, additive)
    if weights:
        words.append("probabilities from qk_matmul_output_mode=3")
    if b.rope is not None:
        words.append(f"{_rope_words(b)} (com.microsoft.RotaryEmbedding)")
    return AttentionPlan(is_causal, cap, mask, additive, weights, ", ".join(words))


def emit_attention(low: PortableLowering, b: Block, plan: AttentionPlan) -> None:
    g = low.g
    q, k, v, pos, past = _project(low, b)
    if b.rope is not None:
        q, k = _rotary(low, b, q, b.heads, pos, past, True), _rotary(low, b, k, b.kv_heads,
                                                                       pos, past, False)
    attn_mask = ""
    if plan.mask is not None:
        lens = low.model.static_lens(b)
        allowed = MaskLowering(g, b, pos, low.input_types, lens).lower(plan.mask)
        attn_mask = allowed if isinstance(allowed, str) else g.const([allowed], bool)
    if plan.additive:
        bias = lower_scores(g, dataclasses.replace(b, score=plan.additive), pos,
                            g.scalar(0.0, np.float32), low.float32)
        if attn_mask:
            bias = g.where(attn_mask, bias, g.scalar(-np.inf, np.float32))
        attn_mask = low.to_model_dtype(bias)
    if attn_mask:  # ORT wants the query axis spelled out: [..., Sq, T]
        rows = g.concat([g.shape(low.streams[b.query], 1, 2), g.i64(1)], axis=0)
        attn_mask = g.op("Expand", attn_mask, rows)
    pk, pv = (f"{b.name}.past_key", f"{b.name}.past_value") if b.cache else ("", "")
    inputs = [q, k, v, attn_mask, pk, pv]
    while not inputs[-1]:
        inputs.pop()
    outs = g.op_multi(
        "Attention", *inputs, n_out=4 if plan.weights else 3 if b.cache else 1,
        q_num_heads=b.heads, kv_num_heads=b.kv_heads, scale=float(b.scale),
        is_causal=1 if plan.is_causal else None, softcap=plan.softcap,
        qk_matmul_output_mode=3 if plan.weights else None,
        softmax_precision=FLOAT if low.dtype != FLOAT else None)
    cache = outs[1:3] if b.cache else []
    _finish(low, b, outs[0], outs[3] if plan.weights else None, cache)


# ---------------------------------------------------------------- shared pieces
def _np_dtype(low: PortableLowering) -> np.dtype:
    return np.dtype(low.model.dtype)


def _project(low: PortableLowering, b: Block) -> tuple[str, str, str, Positions, str | None]:
    """q [B, Sq, H*D], k [B, Sk, G*D], v [B, Sk, G*Dv] in the model dtype, the positions and
    the past length (int64 scalar, with a cache)."""
    xq, xk, xv = low.project(b)
    pos = low.positions(b)
    return xq, xk, xv, pos, pos.past


def _rope_words(b: Block) -> str:
    """``RoPE dim 16`` (plus the scaling type: its tables feed the kernels' cos/sin caches)."""
    scaling = b.rope.scaling
    return f"RoPE dim {b.rope.dim}" + (f" {scaling.rope_type}-scaled" if scaling else "")


def _rope_cache(low: PortableLowering, b: Block, rows: str,
                pos: Positions) -> tuple[str, str]:
    """cos and sin [rows, dim/2] for positions 0..rows-1, in the model dtype (a scaling's
    tables and attention factor included; dynamic / longrope at the block's run-time
    length, the same as the portable lowering's)."""
    g = low.g
    positions = g.range(g.scalar(0, "int64"), rows, g.scalar(1, "int64"))
    length = (run_length(g, pos, g.dim(low.streams[b.query], 1))
              if b.rope.runtime_length else None)
    cos, sin = rope_tables(low, positions, b.rope, length)
    return low.to_model_dtype(cos), low.to_model_dtype(sin)


def _rotary(low: PortableLowering, b: Block, x: str, heads: int, pos: Positions, past: str | None,
            query: bool) -> str:
    """com.microsoft.RotaryEmbedding on x [B, S, heads*D]; positions start at the past
    length (queries of cross-attention at 0)."""
    g = low.g
    start = past if past is not None and (b.self_attention or not query) else None
    offset = g.reshape(start, [1]) if start is not None else g.i64(0)
    if query and not low.model.has_diagonal(b):  # the cache must also cover the query positions
        rows = g.op("Max", pos.k_total, g.dim(low.streams[b.query], 1))
    else:
        rows = pos.k_total
    cos, sin = _rope_cache(low, b, rows, pos)
    return g.op("RotaryEmbedding", x, offset, cos, sin, domain=MS_DOMAIN, num_heads=heads,
                rotary_embedding_dim=b.rope.dim, interleaved=int(b.rope.interleaved))


def _additive_bias(low: PortableLowering, b: Block, additive: tuple[mn.Score, ...],
                   pos: Positions) -> str:
    """alibi / relative_bias as ``attention_bias`` [1, H, Sq, T] in the model dtype."""
    if not additive:
        return ""
    g = low.g
    bias = lower_scores(g, dataclasses.replace(b, score=additive), pos,
                        g.scalar(0.0, np.float32), low.float32)  # [H, Sq, T]
    return low.to_model_dtype(g.unsqueeze(bias, [0]))


def _finish(low: PortableLowering, b: Block, o: str, probs: str | None, cache: list[str]) -> None:
    """Output projection of o [B, Sq, H*Dv] and the block's results."""
    result: dict[str, str] = {}
    if cache:
        result["key"], result["value"] = cache
    if probs is not None:
        result["weights"] = low.to_float32(probs)
    low.streams[b.name] = low.linear(o, f"{b.name}.o_proj", b.has_bias("o")) if b.project else o
    low.results[b.name] = result


def portable_skips_more(low: PortableLowering, b: Block, kernel: str,
                        plan: GqaPlan | MhaPlan | AttentionPlan) -> str | None:
    """Why the portable block-sparse plan (``plan.py``) beats the fused kernel, else None:
    the fixed rule for ``--sparse dense`` / ``block`` and for the blocks the cost model
    (``ort_cost``) has no constants for.

    GQA skips the future as the query chunks do, in about the same time and with less memory,
    so it keeps causal blocks, and cached ones: a rule, not a measurement (since issue 11's
    decode graphs the portable decode step is the faster one on CPU, which ``--sparse auto``
    knows from the cost model; this rule keeps the kernel the user asked for). Its local
    window still costs about the causal triangle: without a cache a block-sparse band wins,
    by more the longer the sequence. MHA and Attention compute every pair, so any
    block-sparse plan wins. The measurements behind these choices are in
    benchmarks/README.md ("Figures behind the lowering choices"). ``--sparse dense`` keeps
    the fused kernels, ``--sparse block`` the portable plan."""
    portable = low.plan(b)
    if portable.kind in ("dense", "dense_chunks"):  # chunked dense skips no pair either
        return None
    if kernel == GQA and (plan.window is None or b.cache):
        return None
    what = "the keys outside the window" if kernel == GQA else "pairs the kernel computes"
    return f"the portable plan ({portable.kind}) skips {what}"


FUSED: tuple[tuple[str, Callable, Callable], ...] = (
    (GQA, match_gqa, emit_gqa),
    (MHA, match_mha, emit_mha),
    ("Attention", match_attention, emit_attention),
)


class OrtLowering(PortableLowering):
    """The portable lowering with fused ONNX Runtime kernels for the blocks that map.

    Per block the kernels are tried in order (causal masks GroupQueryAttention first, the
    others MultiHeadAttention first); each exact one is weighed against the portable plan:
    under ``--sparse auto`` by the measured cost model (``ort_cost.compare``: the cheaper
    wins, the kernel within 10%; ``--explain`` gives both estimates), and of the kernels
    that beat it the cheapest estimate is emitted (``_cheapest``: the order decides within
    10%); else, and where the cost model has no constants for a side, by
    ``portable_skips_more``, which keeps the first exact kernel it does not reject."""

    def block(self, b: Block) -> None:
        if b.static_cache:  # the fused kernels' caches grow (or share a buffer per their
            # own seqlens contract, GroupQueryAttention): the portable lowering writes it
            first = len(self.explain)
            super().block(b)
            self.explain[first:] = [BlockExplanation(
                e.block, e.lowering, "no fused op: a static KV cache (the fused kernels take a "
                f"growing past/present cache); {e.reason}") for e in self.explain[first:]]
            return
        reasons: list[tuple[str, str, bool]] = []  # (kernel, why not, exact)
        pattern = mask_pattern(b.mask)
        first = GQA if isinstance(pattern, Pattern) and pattern.causal else MHA
        winners: list[_Winner] = []
        for name, match, emit in sorted(FUSED, key=lambda f: f[0] != first):
            plan = match(self, b)
            if isinstance(plan, str):
                reasons.append((name, plan, False))
                continue
            choice = self.weigh(b, name, plan)
            if not choice.fused:
                reasons.append((name, choice.text, True))
                continue
            if choice.ms is None:  # the fixed rule (no constants for a side): it keeps the
                if not winners:  # first exact kernel; a later one has no estimate to weigh
                    winners.append(_Winner(name, emit, plan, choice))
                    break
                continue
            winners.append(_Winner(name, emit, plan, choice))
        if winners:
            name, emit, plan, choice = _cheapest(winners)  # one of them, emitted alone
            emit(self, b, plan)
            label = _label(name, self.opset)
            reason = plan.reason + (f"; {choice.text}" if choice.text else "")
            if len(winners) > 1:  # several exact kernels beat the portable plan
                weighed = ", ".join(f"{_label(w.kernel, self.opset)} est. {w.choice.ms:.3g} ms"
                                    for w in winners)
                reason += (f"; the cheapest of the kernels that beat it ({weighed})"
                           if min(w.choice.ms for w in winners) >= choice.ms else
                           f"; the first of the kernels that beat it ({weighed}): no other "
                           f"is estimated {100 * (ort_cost.MARGIN - 1):.0f}% cheaper")
            self.explain.append(BlockExplanation(b.name, label, reason))
            return
        first = len(self.explain)
        super().block(b)
        why = _fallback_reason(reasons)
        self.explain[first:] = [BlockExplanation(e.block, e.lowering, f"{why}; {e.reason}")
                                for e in self.explain[first:]]

    def weigh(self, b: Block, kernel: str, plan: GqaPlan | MhaPlan | AttentionPlan
              ) -> ort_cost.Choice:
        """The exact kernel against the portable plan: the cost model under ``--sparse
        auto`` where it has constants for both, else ``portable_skips_more``."""
        if self.sparse.mode == "auto":
            causal = (plan.causal if isinstance(plan, GqaPlan) else
                      isinstance(plan, AttentionPlan) and (plan.is_causal or plan.mask
                                                           is not None or bool(plan.additive)))
            window = plan.window if isinstance(plan, GqaPlan) else None
            shape = ort_cost.block_shape(self.model, b, self.sparse.seq_hint)
            choice = ort_cost.compare(kernel, causal, window, b, shape, self.plan(b))
            if choice is not None:
                return choice
        why = portable_skips_more(self, b, kernel, plan)
        return ort_cost.Choice(why is None, "" if why is None else
                               f"{kernel.rsplit('.', 1)[-1]} is exact, but {why}")

    def run(self) -> onnx.ModelProto:
        proto = super().run()
        if any(n.domain == MS_DOMAIN for n in proto.graph.node):
            proto.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        return proto


def _label(kernel: str, opset: int) -> str:
    return kernel if kernel != "Attention" else f"Attention-{min(opset, 24)}"


class _Winner(NamedTuple):
    """An exact kernel that beat the portable plan: its name, emitter, plan and verdict."""

    kernel: str
    emit: Callable
    plan: GqaPlan | MhaPlan | AttentionPlan
    choice: ort_cost.Choice


def _cheapest(winners: list[_Winner]) -> _Winner:
    """Of the exact kernels that each beat the portable plan (in the kernel order; all with
    estimates when there are several), the one the cost model estimates cheapest; an earlier
    kernel keeps its place unless a later one is estimated ``MARGIN`` cheaper (nearer
    estimates are within the probe's noise)."""
    best = winners[0]
    for w in winners[1:]:
        if w.choice.ms * ort_cost.MARGIN < best.choice.ms:
            best = w
    return best


def _fallback_reason(reasons: list[tuple[str, str, bool]]) -> str:
    """Why no fused kernel was used: the exact ones the portable plan beat (their words
    first), then the others' reasons."""
    exact = [r for _, r, ok in reasons if ok]
    other = [(n, r) for n, r, ok in reasons if not ok]
    texts = {r for _, r in other}
    if exact:
        rest = "; ".join(f"{n.rsplit('.', 1)[-1]}: {r}" for n, r in other)
        return "; ".join(exact) + (f" (not exact: {rest})" if rest else "")
    if len(texts) == 1:
        return f"no fused op: {texts.pop()}"
    return "no fused op (" + "; ".join(f"{n.rsplit('.', 1)[-1]}: {r}" for n, r in other) + ")"


__all__ = ["ATTENTION_OPSET", "OrtLowering", "Pattern", "emit_attention", "emit_gqa",
           "emit_mha", "mask_pattern", "match_attention", "match_gqa", "match_mha",
           "split_scores"]
