"""Probe: core attention (project: false) compiled for ``--target portable`` and ``--target
ort``, timed in ONNX Runtime CPU, to say which is faster per case (the ``auto`` choices and
``benchmarks/run.py`` read the table).

For the ``ort`` target the probe also times every fused kernel that can take the block
(``via GQA`` / ``via MHA`` / ``via Attention-23``: the target with only that kernel enabled), so
the order in ``attndsl.lower.ort_contrib`` can be checked against numbers (those compile with
``--sparse dense``, so the kernel is used even where the ort target would pick a block-sparse
portable plan). Timings are paired: the variants of one case run interleaved in one process;
the table gives the best and the median of ``--reps`` runs (on a shared machine the best is
the steadier estimate of uncontended speed).

    .venv/bin/python benchmarks/ort_target_probe.py [--threads 2] [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager

import numpy as np
import onnxruntime as ort

from attndsl.api import parse_spec
from attndsl.inputs import random_inputs
from attndsl.lower import ort_contrib
from attndsl.lower.compile import CompileOptions, compile_with_explanations

SPEC = """\
attndsl: 1
name: core
dims: {{batch: 1, seq: {seq}, w: {width}}}
inputs:
  q: [batch, seq, w]
  k: [batch, seq, w]
  v: [batch, seq, w]
blocks:
  attn: {{project: false, query: q, key: k, value: v, heads: {heads}, mask: "{mask}",
         cache: {cache}}}
outputs:
  y: attn
"""

# (name, query length, mask, past length or None for no cache); the first three are the
# brief's, the others inform the ort target's choices (windows, a decode step).
CASES = [("dense", 1024, "all", None), ("dense", 4096, "all", None),
         ("causal", 4096, "causal", None), ("sliding(256)", 4096, "sliding(256)", None),
         ("sliding(256)", 8192, "sliding(256)", None),
         ("causal decode, past 4095", 1, "causal", 4095)]
FORCED = {"via GQA": ort_contrib.GQA, "via MHA": ort_contrib.MHA,
          "via Attention-23": "Attention"}


@contextmanager
def only_kernel(name: str | None):
    """The ort target with only one fused kernel enabled (None: all of them)."""
    saved = ort_contrib.FUSED
    if name is not None:
        ort_contrib.FUSED = tuple(f for f in saved if f[0] == name)
    try:
        yield
    finally:
        ort_contrib.FUSED = saved


def session(proto, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def variants(seq: int, mask: str, past: int | None, heads: int, dim: int) -> dict[str, tuple]:
    """name -> (proto, lowering label) for one case."""
    model = parse_spec(SPEC.format(seq=seq, width=heads * dim, heads=heads, mask=mask,
                                   cache=str(past is not None).lower()), "probe.yaml")
    out = {}
    for label, options in (("portable", CompileOptions(18)),
                           ("portable dense", CompileOptions(18, sparse="dense"))):
        if label == "portable dense" and seq > 4096:
            continue  # the dense masked graph needs > 10 GiB there
        proto, ex = compile_with_explanations(model, {}, options)
        out[label] = (proto, ex[0].lowering, model)
    with only_kernel(None):
        proto, ex = compile_with_explanations(model, {}, CompileOptions(23, "ort"))
    out["ort"] = (proto, ex[0].lowering, model)
    for label, kernel in FORCED.items():  # --sparse dense: the kernel even where a
        with only_kernel(kernel):          # block-sparse plan would win
            proto, ex = compile_with_explanations(model, {}, CompileOptions(23, "ort",
                                                                            sparse="dense"))
        if not ex[0].lowering.startswith("portable"):  # else the kernel does not take it
            out[label] = (proto, ex[0].lowering, model)
    return out


def measure(threads: int, reps: int, cases, heads: int = 12, dim: int = 64) -> list[dict]:
    rows = []
    for kind, seq, mask, past in cases:
        vs = variants(seq, mask, past, heads, dim)
        feed = random_inputs(next(iter(vs.values()))[2], seed=0, past_len=past or 0)
        sessions = {name: session(p, threads) for name, (p, _, _) in vs.items()}
        outs = {name: s.run(None, feed)[0] for name, s in sessions.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(reps):
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, feed)
                times[name].append((time.perf_counter() - t0) * 1e3)
        base = min(times["portable"])
        label = f"{kind} S={seq}"
        for name in sessions:
            best = min(times[name])
            err = float(np.abs(outs[name] - outs["portable"]).max())
            rows.append(dict(case=label, variant=name, lowering=vs[name][1], ms=best,
                             median=statistics.median(times[name]), vs_portable=base / best,
                             diff=err))
        del sessions
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="S=256/512 only (a smoke run)")
    args = ap.parse_args(argv)
    cases = [(k, max(1, s // 8), m, p and p // 8) for k, s, m, p in CASES] if args.quick \
        else CASES
    rows = measure(args.threads, args.reps, cases)
    print(f"core attention, B=1 H=12 D=64 fp32, ORT {ort.__version__} CPU, "
          f"{args.threads} threads, best and median of {args.reps} interleaved runs")
    print("| case | variant | lowering | best ms | median ms | speed-up vs portable (best) "
          "| max diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['variant']} | {r['lowering']} | {r['ms']:.1f} | "
              f"{r['median']:.1f} | {r['vs_portable']:.2f}x | {r['diff']:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
