"""The ``ort`` target's cost model: per block, an estimate for the exact fused ONNX Runtime
kernel and for the portable strategy the plan chooses, from times measured on this machine.

``ort_contrib.OrtLowering`` asks ``compare`` under ``--sparse auto`` and takes the cheaper
one, keeping the fused kernel when the portable plan's estimate is not ``MARGIN`` (10%)
lower; ``--explain`` gives both estimates ("ort GroupQueryAttention (est. 15 ms) over
portable dense (est. 24 ms) ..."). Only exact mappings reach it (the ``match_*`` checks come
first).

Two regimes, each with its own measured constants (``benchmarks/ort_target_probe.py --update``
times them and rewrites the block between the ``MEASURED`` markers below):

- **prefill** (no KV cache): the time is the score cells a strategy computes times a cost
  per cell: every pair for MultiHeadAttention, ONNX Attention, non-causal
  GroupQueryAttention and the portable dense graph, the causal triangle for causal
  GroupQueryAttention (with or without ``local_window_size``: its CPU kernel's window costs
  about the triangle), the query chunks' or band tiles' cells for the block-sparse plans
  (``plan.py``). The cost per cell changes with the size of one head's score matrix (it fits
  in cache at S = 1024, not at 4096), which is why a fused kernel loses to the portable graph
  at one length and wins at another: per kind the probe records the ns per cell at a few
  lengths (H = 12, D = 64), and an estimate interpolates it in log(cells per head), keeps the
  nearest point's outside, and scales by batch x heads x (D + Dv) / 128. So the choice
  depends on the lengths and the mask, not on the number or size of heads.
- **decode** (a block with a KV cache, costed as one step of the query length, 1 when
  dynamic, after ``seq_hint`` past positions: what such a block spends its life doing): the
  time is the cache traffic, key and value elements of past + new times a cost per element
  that again depends on the size (a cache that fits in the CPU's cache costs less per
  element), measured at a few past lengths (B = 1) and interpolated the same way; a batch
  of B rows costs B times one row.

The constants are for float32, B = 1, ONNX Runtime's CPU provider with 2 threads (the
benchmark harness's sessions); fp16 models and other machines use them as they are (only the
ratios between kinds decide). A kind without constants (a portable strategy the probe did
not time, a kernel in a regime it did not time) gives no estimate, and the lowering keeps its
fixed rule (``ort_contrib.portable_skips_more``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..features import nodes as mn
from ..ir.nodes import Block, Model
from ..masks.algebra import simplify
from .plan import DEFAULT_SEQ, Plan

# BEGIN MEASURED (written by benchmarks/ort_target_probe.py --update)
MEASURED_ON = (
    '2026-11-30 02:43 UTC; '
    'Intel(R) Xeon(R) Processor, 2 cores; '
    'ONNX Runtime 1.32.0 CPU, 2 threads; '
    'best of 5 interleaved runs (decode steps: 20) in 2 pass(es); '
    'benchmarks/ort_target_probe.py --fit --runs 2'
)
PREFILL: dict[str, tuple[tuple[float, float], ...]] = {
    'attention': ((1.048576, 1.9077), (4.194304, 1.8177), (16.777216, 1.4407)),
    'attention-masked': ((1.048576, 3.6967), (4.194304, 3.3529), (16.777216, 3.7577)),
    'band': ((0.653312, 4.0915), (1.306624, 4.6084), (2.613248, 3.837)),
    'chunks': ((0.589824, 3.0786), (2.359296, 2.2821), (8.912896, 2.0371)),
    'dense': ((1.048576, 1.9458), (4.194304, 1.7374), (16.777216, 1.4901)),
    'dense-masked': ((1.048576, 6.1738), (4.194304, 4.8129), (16.777216, 5.1521)),
    'gqa': ((0.5248, 11.0682), (2.098176, 4.5656), (8.390656, 3.0941)),
    'gqa-noncausal': ((1.048576, 2.7997), (4.194304, 2.2117), (16.777216, 1.9486)),
    'gqa-window': ((2.098176, 7.1522), (8.390656, 4.0911), (33.558528, 2.8873)),
    'mha': ((1.048576, 2.3155), (4.194304, 1.8839), (16.777216, 1.5521)),
}
DECODE: dict[str, tuple[tuple[float, float], ...]] = {
    'attention': ((2.0992, 0.3649), (8.390656, 0.4593), (16.779264, 0.9034)),
    'attention-masked': ((2.0992, 0.686), (8.390656, 1.8711), (16.779264, 1.335)),
    'band-gqa': ((2.0992, 0.7336), (8.390656, 0.4783), (16.779264, 0.4112)),
    'dense': ((2.0992, 0.3992), (8.390656, 1.023), (16.779264, 0.9514)),
    'dense-gqa': ((2.0992, 0.6731), (8.390656, 1.0378), (16.779264, 0.9316)),
    'gqa': ((2.0992, 0.7565), (8.390656, 2.6427), (16.779264, 1.979)),
    'gqa-window': ((2.0992, 0.9942), (8.390656, 1.6288), (16.779264, 1.3946)),
    'mha': ((2.0992, 0.3844), (8.390656, 1.0352), (16.779264, 0.7466)),
}
CASES: tuple[tuple[str, str, float, float, float], ...] = (
    ('dense S=1024', 'dense', 1.048576, 12.0, 24.484),
    ('dense S=1024', 'gqa-noncausal', 1.048576, 12.0, 35.229),
    ('dense S=1024', 'mha', 1.048576, 12.0, 29.136),
    ('dense S=1024', 'attention', 1.048576, 12.0, 24.005),
    ('dense S=2048', 'dense', 4.194304, 12.0, 87.445),
    ('dense S=2048', 'gqa-noncausal', 4.194304, 12.0, 111.317),
    ('dense S=2048', 'mha', 4.194304, 12.0, 94.821),
    ('dense S=2048', 'attention', 4.194304, 12.0, 91.49),
    ('dense S=4096', 'dense', 16.777216, 12.0, 299.995),
    ('dense S=4096', 'gqa-noncausal', 16.777216, 12.0, 392.314),
    ('dense S=4096', 'mha', 16.777216, 12.0, 312.489),
    ('dense S=4096', 'attention', 16.777216, 12.0, 290.057),
    ('causal S=1024', 'chunks', 0.589824, 12.0, 21.79),
    ('causal S=1024', 'dense-masked', 1.048576, 12.0, 77.685),
    ('causal S=1024', 'gqa', 0.5248, 12.0, 69.703),
    ('causal S=1024', 'attention-masked', 1.048576, 12.0, 46.515),
    ('causal S=2048', 'chunks', 2.359296, 12.0, 64.61),
    ('causal S=2048', 'dense-masked', 4.194304, 12.0, 242.239),
    ('causal S=2048', 'gqa', 2.098176, 12.0, 114.953),
    ('causal S=2048', 'attention-masked', 4.194304, 12.0, 168.758),
    ('causal S=4096', 'chunks', 8.912896, 12.0, 217.874),
    ('causal S=4096', 'dense-masked', 16.777216, 12.0, 1037.253),
    ('causal S=4096', 'gqa', 8.390656, 12.0, 311.542),
    ('causal S=4096', 'attention-masked', 16.777216, 12.0, 756.523),
    ('sliding(256) S=2048', 'band', 0.653312, 12.0, 32.076),
    ('sliding(256) S=2048', 'gqa-window', 2.098176, 12.0, 180.078),
    ('sliding(256) S=4096', 'band', 1.306624, 12.0, 72.257),
    ('sliding(256) S=4096', 'gqa-window', 8.390656, 12.0, 411.922),
    ('sliding(256) S=8192', 'band', 2.613248, 12.0, 120.325),
    ('sliding(256) S=8192', 'gqa-window', 33.558528, 12.0, 1162.736),
    ('decode causal past 1024', 'dense-gqa', 2.0992, 1, 1.413),
    ('decode causal past 1024', 'gqa', 2.0992, 1, 1.588),
    ('decode causal past 1024', 'attention-masked', 2.0992, 1, 1.44),
    ('decode causal past 4096', 'dense-gqa', 8.390656, 1, 8.708),
    ('decode causal past 4096', 'gqa', 8.390656, 1, 22.174),
    ('decode causal past 4096', 'attention-masked', 8.390656, 1, 15.7),
    ('decode causal past 8192', 'dense-gqa', 16.779264, 1, 15.631),
    ('decode causal past 8192', 'gqa', 16.779264, 1, 33.206),
    ('decode causal past 8192', 'attention-masked', 16.779264, 1, 22.401),
    ('decode sliding(256) past 1024', 'band-gqa', 2.0992, 1, 1.54),
    ('decode sliding(256) past 1024', 'gqa-window', 2.0992, 1, 2.087),
    ('decode sliding(256) past 4096', 'band-gqa', 8.390656, 1, 4.013),
    ('decode sliding(256) past 4096', 'gqa-window', 8.390656, 1, 13.667),
    ('decode sliding(256) past 8192', 'band-gqa', 16.779264, 1, 6.899),
    ('decode sliding(256) past 8192', 'gqa-window', 16.779264, 1, 23.4),
    ('decode dense past 1024', 'dense', 2.0992, 1, 0.838),
    ('decode dense past 1024', 'mha', 2.0992, 1, 0.807),
    ('decode dense past 1024', 'attention', 2.0992, 1, 0.766),
    ('decode dense past 4096', 'dense', 8.390656, 1, 8.584),
    ('decode dense past 4096', 'mha', 8.390656, 1, 8.686),
    ('decode dense past 4096', 'attention', 8.390656, 1, 3.854),
    ('decode dense past 8192', 'dense', 16.779264, 1, 15.963),
    ('decode dense past 8192', 'mha', 16.779264, 1, 12.527),
    ('decode dense past 8192', 'attention', 16.779264, 1, 15.159),
)
# END MEASURED
# PREFILL: kind -> ((million score cells per batch row and head, ns per cell at D = Dv = 64),
# ...) sorted by cells; DECODE: kind -> ((million key/value elements, ns per element), ...);
# CASES: (probe case, kind, amount, scale, best ms) for every variant the probe timed
# (``Work``), for the cost model check (tests/test_ort_cost.py).

# the portable plan must be estimated this much faster to replace an exact fused kernel: the
# ort target is the fast path, and closer estimates are within the probe's run-to-run noise
MARGIN = 1.1
KERNEL_KINDS = {"com.microsoft.GroupQueryAttention": "gqa",
                "com.microsoft.MultiHeadAttention": "mha", "Attention": "attention"}
SHORT = {"com.microsoft.GroupQueryAttention": "GroupQueryAttention",
         "com.microsoft.MultiHeadAttention": "MultiHeadAttention"}


@dataclass(frozen=True)
class Shape:
    """The sizes a block is costed at: batch, query rows, keys (past + new), past length;
    ``decode``: the block has a KV cache (costed as one step)."""

    batch: int
    sq: int
    sk: int
    past: int
    decode: bool


@dataclass(frozen=True)
class Work:
    """What one candidate's time is a function of: its ``kind`` (a ``PREFILL`` / ``DECODE``
    key), the ``amount`` (prefill: million score cells one batch row and head computes;
    decode: million key/value elements of one batch row's step) and a ``scale`` (prefill:
    batch x heads x (D + Dv) / 128, the multiple of the probe's per-head cost at D = Dv = 64;
    decode: the batch)."""

    kind: str
    amount: float
    scale: float = 1.0


@dataclass(frozen=True)
class Choice:
    """The cost model's verdict for one block: ``fused`` wins or not, and the words for
    ``--explain``; ``ms``: the kernel's estimate (None under the fixed rule), which
    ``OrtLowering`` compares between exact kernels."""

    fused: bool
    text: str
    ms: float | None = None


def block_shape(model: Model, b: Block, seq_hint: int | None) -> Shape:
    """The sizes ``b`` is costed at: static lengths, dynamic ones at ``seq_hint`` (4096);
    with a cache a step of the query length (1 when dynamic) after ``seq_hint`` past."""
    hint = seq_hint or DEFAULT_SEQ
    batch = model.static_size(model.stream_dims(b.query)[0]) or 1
    q_len, k_len = model.static_lens(b)
    if b.cache:
        sq = q_len or 1
        new = k_len or sq
        return Shape(batch, sq, hint + new, hint, True)
    return Shape(batch, q_len or hint, k_len or hint, 0, False)


def _prefill(kind: str, b: Block, shape: Shape, cells_per_head: float) -> Work:
    return Work(kind, cells_per_head / 1e6,
                shape.batch * b.heads * (b.head_dim + b.v_head_dim) / 128)


def _decode(kind: str, b: Block, shape: Shape) -> Work:
    # per batch row (each row's cache is its own block of memory), times the batch
    return Work(kind, b.kv_heads * shape.sk * (b.head_dim + b.v_head_dim) / 1e6, shape.batch)


def fused_work(kernel: str, causal: bool, window: int | None, b: Block, shape: Shape) -> Work:
    """A fused kernel's work on ``b``: GroupQueryAttention's causal triangle (``gqa``;
    ``gqa-window`` with a local window), every pair for the others (and for
    ``gqa-noncausal``). ``causal``: the kernel masks (GroupQueryAttention: causal; ONNX
    Attention: ``is_causal`` or an ``attn_mask``, kind ``attention-masked``)."""
    kind = KERNEL_KINDS[kernel]
    if kind == "attention" and causal:
        kind = "attention-masked"
    elif kind == "gqa" and not causal:
        kind = "gqa-noncausal"
    elif kind == "gqa" and window is not None:
        kind = "gqa-window"
    if shape.decode:
        return _decode(kind, b, shape)
    if kind in ("gqa", "gqa-window"):
        sq, past = shape.sq, shape.sk - shape.sq
        return _prefill(kind, b, shape, sq * past + sq * (sq + 1) / 2)
    return _prefill(kind, b, shape, shape.sq * shape.sk)


def portable_work(plan: Plan, b: Block, shape: Shape) -> Work | None:
    """The portable plan's work on ``b`` (the cells its strategy computes: ``plan.py``),
    None for a strategy without a formula here (tile lists: no fused kernel takes their
    masks). Decode kinds of grouped-query blocks end in ``-gqa`` (measured apart: the
    portable step handles each query head's keys and values)."""
    # the chunked dense plan computes the dense cells (measured 1.02-1.15x the one-tensor
    # graph's time, benchmarks/README.md): costed as dense
    kind = "dense" if plan.kind == "dense_chunks" else plan.kind
    if kind == "dense" and simplify(b.mask, b.heads) != mn.All():
        kind = "dense-masked"
    if shape.decode:  # the portable step's K/V work grows with the query heads per kv head
        grouped = "-gqa" if b.heads > b.kv_heads else ""
        return _decode(("dense" if kind == "dense-masked" else kind) + grouped, b, shape)
    sq, sk = shape.sq, shape.sk
    if kind in ("dense", "dense-masked"):
        cells = sq * sk
    elif kind == "chunks":
        bounds = [sq * c // plan.chunks for c in range(plan.chunks + 1)]
        cells = sum((r1 - r0) * min(sk, max(1, r1 + plan.hi))
                    for r0, r1 in zip(bounds, bounds[1:], strict=False))
    elif kind == "band":
        t = max(1, min(plan.tile, sq))
        cells = -(-sq // t) * t * (t + plan.hi - plan.lo)
    else:
        return None
    return _prefill(kind, b, shape, cells)


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """The per-cell cost at ``x`` from measured (amount, cost) points sorted by amount:
    linear in log(amount) between them, the nearest point's outside them."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + f * (y1 - y0)
    raise AssertionError("points must be sorted by amount")


def estimate(work: Work, decode: bool) -> float | None:
    """Estimated ms of ``work`` from the measured constants, None without them."""
    table = (DECODE if decode else PREFILL).get(work.kind)
    if table is None:
        return None
    return interpolate(table, work.amount) * work.amount * work.scale  # ns x millions = ms


def compare(kernel: str, causal: bool, window: int | None, b: Block, shape: Shape,
            plan: Plan) -> Choice | None:
    """The fused kernel vs the portable plan on ``b`` at ``shape``: the cheaper one (the
    fused kernel unless the portable plan is ``MARGIN`` cheaper) and the words for
    ``--explain``; None when a side has no measured constants."""
    fused = estimate(fused_work(kernel, causal, window, b, shape), shape.decode)
    work = portable_work(plan, b, shape)
    portable = estimate(work, shape.decode) if work is not None else None
    if fused is None or portable is None:
        return None
    name = SHORT.get(kernel, kernel)
    at = (f"a decode step of {shape.sq} after {shape.past} past positions" if shape.decode
          else f"{shape.sq} queries x {shape.sk} keys")
    ort_words = f"ort {name} (est. {fused:.3g} ms)"
    portable_words = f"portable {plan.kind} (est. {portable:.3g} ms)"
    if fused <= portable:
        return Choice(True, f"{ort_words} over {portable_words}, {at}", fused)
    if fused <= portable * MARGIN:
        return Choice(True, f"{ort_words} over {portable_words}, {at}: within "
                      f"{100 * (MARGIN - 1):.0f}%, the fused kernel is kept", fused)
    return Choice(False, f"{portable_words} over {ort_words}, {at}", fused)


__all__ = ["CASES", "DECODE", "MARGIN", "MEASURED_ON", "PREFILL", "Choice", "Shape", "Work",
           "block_shape", "compare", "estimate", "fused_work", "interpolate", "portable_work"]
