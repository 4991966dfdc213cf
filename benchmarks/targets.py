"""The performance targets of the issues, as data: which case, which measurement, which bound.

``Report.targets()`` evaluates each target on a run, for attndsl's default variant and for
its best variant; ``benchmarks/report.py`` prints them from result files (one file: met /
missed per target; several: every run's value and in how many runs the target held).

A target's ``metric`` names how its value is computed from a run (``Report.metric``); ``args``
are that metric's arguments, where ``SUBJECT`` stands for the attndsl variant being judged:

- ``ratio`` (a, b): t(a) / t(b) on ``case``, paired round by round (chained through the anchor
  when a and b were timed in different processes)
- ``peak`` (): the subject's peak memory on ``case``, MiB
- ``growth`` (small): t(case) / t(small) of the subject (paired in the sliding scaling process)
- ``peak_exponent`` (small): log(peak(case) / peak(small)) / log(S / S_small): 1 when the peak
  grows as O(S), 2 as O(S²)
- ``vs_fused`` (): t(subject) / t(the fastest of ORT's fused attention ops) on ``case``
- ``dense_masked`` (smaller): t(attndsl's dense-masked graph) / t(subject), estimated from the
  case at half the length when the dense graph does not fit the memory cap
"""

from __future__ import annotations

from dataclasses import dataclass

SUBJECT = "@"  # the attndsl variant being judged (the default, or each variant for "best")


@dataclass(frozen=True)
class Target:
    """One goal: ``metric(*args)`` on ``case`` compared with ``bound`` by ``op``."""

    issue: int
    id: str  # unique, stable across runs (result files are matched on it)
    case: str
    label: str
    op: str  # one of ">=", "<=", "<"
    bound: float
    metric: str
    args: tuple = ()

    def __post_init__(self) -> None:
        if self.op not in (">=", "<=", "<"):
            raise ValueError(f"target {self.id}: unknown comparison {self.op!r}")


def _decode(case: str, what: str) -> list[Target]:
    return [
        Target(11, f"i11-{case}-vs-gqa", case,
               f"decode {what}: t(attndsl) / t(ORT GroupQueryAttention)", "<=", 1.0, "ratio",
               (SUBJECT, "ort-gqa")),
        Target(11, f"i11-{case}-vs-memcpy", case,
               f"decode {what}: t(attndsl) / t(memcpy of the KV cache)", "<=", 3.0, "ratio",
               (SUBJECT, "memcpy")),
    ]


ISSUE_4: list[Target] = [
    Target(4, "i4-causal-export", "causal-4096",
           "causal S=4096: t(torch.onnx.export + ORT) / t(attndsl)", ">=", 1.8, "ratio",
           ("export", SUBJECT)),
    Target(4, "i4-causal-sdpa", "causal-4096",
           "causal S=4096: t(attndsl) / t(PyTorch SDPA is_causal)", "<=", 1.2, "ratio",
           (SUBJECT, "sdpa")),
    Target(4, "i4-sliding-dense", "sliding256-8192",
           "sliding(256) S=8192: t(dense-masked graph) / t(attndsl)", ">=", 12.0,
           "dense_masked", ("sliding256-4096",)),
    Target(4, "i4-sliding-flex", "sliding256-8192",
           "sliding(256) S=8192: t(compiled flex_attention) / t(attndsl)", ">=", 1.3, "ratio",
           ("flex", SUBJECT)),
    Target(4, "i4-sliding-growth", "sliding256-16384",
           "sliding(256): t(S=16384) / t(S=4096)", "<=", 4.6, "growth", ("sliding256-4096",)),
    Target(4, "i4-sliding-peak", "sliding256-16384",
           "sliding(256) S=16384: peak memory (MiB)", "<", 1024.0, "peak"),
    *[Target(4, f"i4-dense-{n}-fused", f"dense-{n}",
             f"dense S={n}: t(attndsl) / t(best ORT fused op)", "<=", 1.1, "vs_fused")
      for n in (1024, 2048, 4096)],
]

ISSUE_11: list[Target] = [
    *_decode("decode-4096", "GQA 32/8 D=128 past 4096 B=1"),
    *_decode("decode-4096-b8", "GQA 32/8 D=128 past 4096 B=8"),
    Target(11, "i11-causal-export", "causal-4096",
           "causal S=4096: t(torch.onnx.export + ORT) / t(attndsl)", ">=", 2.0, "ratio",
           ("export", SUBJECT)),
    Target(11, "i11-causal-sdpa", "causal-4096",
           "causal S=4096: t(attndsl) / t(PyTorch SDPA is_causal)", "<=", 1.1, "ratio",
           (SUBJECT, "sdpa")),
    *[Target(11, f"i11-dense-{n}-mha", f"dense-{n}",
             f"dense S={n}: t(attndsl) / t(ORT MultiHeadAttention)", "<=", 1.0, "ratio",
             (SUBJECT, "ort-mha")) for n in (1024, 2048, 4096)],
    Target(11, "i11-dense-peak-exponent", "dense-4096",
           "dense S=1024→4096: peak memory growth exponent (1: O(S), 2: O(S²))", "<=", 1.2,
           "peak_exponent", ("dense-1024",)),
    *[Target(11, f"i11-sliding-{n}-flex", f"sliding256-{n}",
             f"sliding(256) S={n}: t(compiled flex_attention) / t(attndsl)", ">=", 1.3,
             "ratio", ("flex", SUBJECT)) for n in (8192, 16384)],
    Target(11, "i11-sliding-peak", "sliding256-16384",
           "sliding(256) S=16384: peak memory (MiB)", "<", 1024.0, "peak"),
    Target(11, "i11-loop-vs-gqa", "loop256-512+256",
           "prefill 512 + decode 256, Mistral-like: t(attndsl loop) / t(ORT GQA loop) "
           "(= tokens/s of ORT GQA / attndsl's)", "<=", 1.2, "ratio", (SUBJECT, "ort-gqa")),
]

TARGETS: list[Target] = ISSUE_4 + ISSUE_11


def verdict(value: float | None, op: str, bound: float) -> str:
    """"met", "missed (1.07× short)" (by how much), or "not measured"."""
    if value is None:
        return "not measured"
    if met(value, op, bound):
        return "met"
    gap = bound / value if op == ">=" else value / bound
    return f"missed ({gap:.2f}× short)" if gap >= 1.005 else f"missed ({gap:.3f}× short)"


def met(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound}[op]
