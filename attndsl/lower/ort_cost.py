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
    '2026-11-30 00:23 UTC; '
    'Intel(R) Xeon(R) Processor, 2 cores; '
    'ONNX Runtime 1.32.0 CPU, 2 threads; '
    'best of 5 interleaved runs (decode steps: 20) in 2 pass(es); '
    'benchmarks/ort_target_probe.py --fit --runs 2'
)
PREFILL: dict[str, tuple[tuple[float, float], ...]] = {
    'attention': ((1.048576, 6.827), (4.194304, 4.1514), (16.777216, 5.3668)),
    'attention-masked': ((1.048576, 9.8221), (4.194304, 11.8884), (16.777216, 9.8538)),
    'band': ((0.653312, 18.29), (1.306624, 22.1906), (2.613248, 16.6135)),
    'chunks': ((0.589824, 21.8812), (2.359296, 12.7914), (8.912896, 11.4152)),
    'dense': ((1.048576, 6.2758), (4.194304, 5.0889), (16.777216, 4.8432)),
    'dense-masked': ((1.048576, 25.8356), (4.194304, 17.4448), (16.777216, 15.0894)),
    'gqa': ((0.5248, 38.2608), (2.098176, 14.7458), (8.390656, 10.6037)),
    'gqa-noncausal': ((1.048576, 7.7905), (4.194304, 5.2039), (16.777216, 4.7706)),
    'gqa-window': ((2.098176, 15.4081), (8.390656, 14.6592), (33.558528, 9.1899)),
    'mha': ((1.048576, 5.3049), (4.194304, 4.6541), (16.777216, 3.87)),
}
DECODE: dict[str, tuple[tuple[float, float], ...]] = {
    'attention': ((2.0992, 0.5707), (8.390656, 2.8309), (16.779264, 2.1574)),
    'attention-masked': ((2.0992, 0.8127), (8.390656, 4.8089), (16.779264, 5.0096)),
    'band-gqa': ((2.0992, 1.6754), (8.390656, 3.9717), (16.779264, 3.6282)),
    'dense': ((2.0992, 0.8965), (8.390656, 8.5234), (16.779264, 5.5318)),
    'dense-gqa': ((2.0992, 1.8478), (8.390656, 8.596), (16.779264, 6.9172)),
    'gqa': ((2.0992, 1.0366), (8.390656, 4.7058), (16.779264, 8.085)),
    'gqa-window': ((2.0992, 1.1238), (8.390656, 5.9949), (16.779264, 4.0501)),
    'mha': ((2.0992, 0.4916), (8.390656, 2.0557), (16.779264, 1.6381)),
}
CASES: tuple[tuple[str, str, float, float, float], ...] = (
    ('dense S=1024', 'dense', 1.048576, 12.0, 78.968),
    ('dense S=1024', 'gqa-noncausal', 1.048576, 12.0, 98.027),
    ('dense S=1024', 'mha', 1.048576, 12.0, 66.751),
    ('dense S=1024', 'attention', 1.048576, 12.0, 85.903),
    ('dense S=2048', 'dense', 4.194304, 12.0, 256.131),
    ('dense S=2048', 'gqa-noncausal', 4.194304, 12.0, 261.92),
    ('dense S=2048', 'mha', 4.194304, 12.0, 234.249),
    ('dense S=2048', 'attention', 4.194304, 12.0, 208.949),
    ('dense S=4096', 'dense', 16.777216, 12.0, 975.067),
    ('dense S=4096', 'gqa-noncausal', 16.777216, 12.0, 960.441),
    ('dense S=4096', 'mha', 16.777216, 12.0, 779.138),
    ('dense S=4096', 'attention', 16.777216, 12.0, 1080.486),
    ('causal S=1024', 'chunks', 0.589824, 12.0, 154.873),
    ('causal S=1024', 'dense-masked', 1.048576, 12.0, 325.087),
    ('causal S=1024', 'gqa', 0.5248, 12.0, 240.951),
    ('causal S=1024', 'attention-masked', 1.048576, 12.0, 123.591),
    ('causal S=2048', 'chunks', 2.359296, 12.0, 362.145),
    ('causal S=2048', 'dense-masked', 4.194304, 12.0, 878.026),
    ('causal S=2048', 'gqa', 2.098176, 12.0, 371.271),
    ('causal S=2048', 'attention-masked', 4.194304, 12.0, 598.361),
    ('causal S=4096', 'chunks', 8.912896, 12.0, 1220.911),
    ('causal S=4096', 'dense-masked', 16.777216, 12.0, 3037.904),
    ('causal S=4096', 'gqa', 8.390656, 12.0, 1067.661),
    ('causal S=4096', 'attention-masked', 16.777216, 12.0, 1983.837),
    ('sliding(256) S=2048', 'band', 0.653312, 12.0, 143.389),
    ('sliding(256) S=2048', 'gqa-window', 2.098176, 12.0, 387.946),
    ('sliding(256) S=4096', 'band', 1.306624, 12.0, 347.938),
    ('sliding(256) S=4096', 'gqa-window', 8.390656, 12.0, 1476.005),
    ('sliding(256) S=8192', 'band', 2.613248, 12.0, 520.983),
    ('sliding(256) S=8192', 'gqa-window', 33.558528, 12.0, 3700.779),
    ('decode causal past 1024', 'dense-gqa', 2.0992, 1.0, 3.879),
    ('decode causal past 1024', 'gqa', 2.0992, 1.0, 2.176),
    ('decode causal past 1024', 'attention-masked', 2.0992, 1.0, 1.706),
    ('decode causal past 4096', 'dense-gqa', 8.390656, 1.0, 72.126),
    ('decode causal past 4096', 'gqa', 8.390656, 1.0, 39.485),
    ('decode causal past 4096', 'attention-masked', 8.390656, 1.0, 40.35),
    ('decode causal past 8192', 'dense-gqa', 16.779264, 1.0, 116.065),
    ('decode causal past 8192', 'gqa', 16.779264, 1.0, 135.661),
    ('decode causal past 8192', 'attention-masked', 16.779264, 1.0, 84.057),
    ('decode sliding(256) past 1024', 'band-gqa', 2.0992, 1.0, 3.517),
    ('decode sliding(256) past 1024', 'gqa-window', 2.0992, 1.0, 2.359),
    ('decode sliding(256) past 4096', 'band-gqa', 8.390656, 1.0, 33.325),
    ('decode sliding(256) past 4096', 'gqa-window', 8.390656, 1.0, 50.301),
    ('decode sliding(256) past 8192', 'band-gqa', 16.779264, 1.0, 60.879),
    ('decode sliding(256) past 8192', 'gqa-window', 16.779264, 1.0, 67.958),
    ('decode dense past 1024', 'dense', 2.0992, 1.0, 1.882),
    ('decode dense past 1024', 'mha', 2.0992, 1.0, 1.032),
    ('decode dense past 1024', 'attention', 2.0992, 1.0, 1.198),
    ('decode dense past 4096', 'dense', 8.390656, 1.0, 71.517),
    ('decode dense past 4096', 'mha', 8.390656, 1.0, 17.249),
    ('decode dense past 4096', 'attention', 8.390656, 1.0, 23.753),
    ('decode dense past 8192', 'dense', 16.779264, 1.0, 92.819),
    ('decode dense past 8192', 'mha', 16.779264, 1.0, 27.486),
    ('decode dense past 8192', 'attention', 16.779264, 1.0, 36.2),
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
    ``--explain``."""

    fused: bool
    text: str


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
        return Choice(True, f"{ort_words} over {portable_words}, {at}")
    if fused <= portable * MARGIN:
        return Choice(True, f"{ort_words} over {portable_words}, {at}: within "
                      f"{100 * (MARGIN - 1):.0f}%, the fused kernel is kept")
    return Choice(False, f"{portable_words} over {ort_words}, {at}")


__all__ = ["CASES", "DECODE", "MARGIN", "MEASURED_ON", "PREFILL", "Choice", "Shape", "Work",
           "block_shape", "compare", "estimate", "fused_work", "interpolate", "portable_work"]
