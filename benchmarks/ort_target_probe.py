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

``--fit`` measures the constants of the ort target's cost model instead
(``attndsl/lower/ort_cost.py``): every fused kernel and the portable plan on prefill shapes
(no cache: dense, causal, sliding(256) at a few lengths; H=12, D=64) and on decode steps
(one query after 1024, 4096 and 8192 past positions; GQA 32/8 causal and sliding(256), MHA
8/8 dense; D=128), the best of ``--reps`` interleaved runs each (decode steps: at least 20);
``--runs N`` repeats the whole pass and keeps each variant's best time (a loaded machine);
it prints the constants, and ``--update`` also writes them into the module's ``MEASURED``
block (with the date, the machine and the ORT version).

    .venv/bin/python benchmarks/ort_target_probe.py --fit [--update] [--reps 5] [--runs 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort

from attndsl.api import parse_spec
from attndsl.inputs import random_inputs
from attndsl.lower import ort_contrib, ort_cost
from attndsl.lower.compile import CompileOptions, compile_with_explanations
from attndsl.lower.onnx_portable import PortableLowering
from attndsl.lower.plan import SparseOptions

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


# ---------------------------------------------------------------- the cost model's constants
FIT_SPEC = """\
attndsl: 1
name: core
dims: {{batch: 1, seq: {seq}}}
inputs:
  q: [batch, seq, {qw}]
  k: [batch, seq, {kw}]
  v: [batch, seq, {kw}]
blocks:
  attn: {{project: false, query: q, key: k, value: v, heads: {heads}, kv_heads: {kv},
         mask: "{mask}", cache: {cache}}}
outputs:
  y: attn
"""
# (label, mask, heads, kv heads, head dim, lengths): prefill shapes (lengths = S) and decode
# steps (lengths = past; one query)
FIT_PREFILL = [("dense", "all", 12, 12, 64, (1024, 2048, 4096)),
               ("causal", "causal", 12, 12, 64, (1024, 2048, 4096)),
               ("sliding(256)", "sliding(256)", 12, 12, 64, (2048, 4096, 8192))]
FIT_DECODE = [("decode causal", "causal", 32, 8, 128, (1024, 4096, 8192)),
              ("decode sliding(256)", "causal & sliding(256)", 32, 8, 128, (1024, 4096, 8192)),
              ("decode dense", "all", 8, 8, 128, (1024, 4096, 8192))]
MODULE = Path(ort_cost.__file__)


def fit_variants(mask: str, heads: int, kv: int, dim: int, seq: int, past: int | None
                 ) -> tuple[dict[str, tuple], dict]:
    """label -> (proto, ``ort_cost.Work``) for one shape: the portable plan (and the dense
    graph for a prefill the plan does not keep dense) and every fused kernel that takes it;
    and the model (for the inputs)."""
    decode = past is not None
    # decode: the query length dynamic, as a cache block that serves the prompt and the
    # steps has it (a sliding window then gets the portable band plan)
    model = parse_spec(FIT_SPEC.format(seq="dynamic" if decode else seq, qw=heads * dim,
                                       kw=kv * dim,
                                       heads=heads, kv=kv, mask=mask,
                                       cache=str(decode).lower()), "fit.yaml")
    b = model.blocks[0]
    shape = (ort_cost.Shape(1, 1, past + 1, past, True) if decode
             else ort_cost.Shape(1, seq, seq, 0, False))
    out: dict[str, tuple] = {}
    for label, sparse in (("portable", "auto"), ("portable dense", "dense")):
        low = PortableLowering(model, {}, 18, sparse=SparseOptions(sparse, seq_hint=past))
        plan = low.plan(b)
        if label == "portable dense" and (decode or mask != "causal"):
            continue  # the dense-masked graph once (causal); decode plans stay dense
        work = ort_cost.portable_work(plan, b, shape)
        proto, _ = compile_with_explanations(model, {}, CompileOptions(18, sparse=sparse))
        out[label] = (proto, work)
    pattern = ort_contrib.mask_pattern(b.mask)
    for kernel in FORCED.values():
        with only_kernel(kernel):
            proto, ex = compile_with_explanations(model, {}, CompileOptions(23, "ort",
                                                                            sparse="dense"))
        if ex[0].lowering.startswith("portable"):
            continue  # the kernel does not take this block
        work = ort_cost.fused_work(kernel, pattern.causal, pattern.window, b, shape)
        # (core attention: Attention masks exactly when the mask is causal)
        out[kernel.rsplit(".", 1)[-1]] = (proto, work)
    return out, model


def fit_measure(threads: int, reps: int, shrink: int = 1
                ) -> list[tuple[str, str, float, float, float]]:
    """(case, kind, amount, scale, best ms) for every variant of every fit shape (lengths
    divided by ``shrink``: a smoke run)."""
    rows = []
    for group, decode in ((FIT_PREFILL, False), (FIT_DECODE, True)):
        for label, mask, heads, kv, dim, lengths in group:
            for n in (n // shrink for n in lengths):
                vs, model = fit_variants(mask, heads, kv, dim, n, n if decode else None)
                feed = random_inputs(model, {"batch": 1, "seq": 1 if decode else n}, seed=0,
                                     past_len=n if decode else 0)
                sessions = {name: session(p, threads) for name, (p, _) in vs.items()}
                for s in sessions.values():
                    s.run(None, feed)  # warm-up
                times: dict[str, list[float]] = {name: [] for name in sessions}
                for rep in range(max(reps, 20) if decode else reps):  # steps are short
                    order = list(sessions) if rep % 2 == 0 else list(sessions)[::-1]
                    for name in order:
                        t0 = time.perf_counter()
                        sessions[name].run(None, feed)
                        times[name].append((time.perf_counter() - t0) * 1e3)
                case = f"{label} {'past' if decode else 'S='}{' ' if decode else ''}{n}"
                for name, (_, w) in vs.items():
                    rows.append((case, w.kind, round(w.amount, 6), round(w.scale, 6),
                                 round(min(times[name]), 3)))
                    print(f"  {case}: {name} ({w.kind}) {min(times[name]):.1f} ms", flush=True)
                del sessions
    return rows


def fit(rows: list[tuple[str, str, float, float, float]]
        ) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The PREFILL and DECODE tables: per kind and amount the fastest time as ns per score
    cell of one head at D = 64 (prefill) or per key/value element (decode)."""
    tables: tuple[dict[str, dict[float, float]], ...] = ({}, {})
    for case, kind, amount, scale, ms in rows:
        points = tables[case.startswith("decode")].setdefault(kind, {})
        ns = round(ms / (amount * scale), 4)
        points[amount] = min(ns, points.get(amount, ns))
    return tuple({k: tuple(sorted(v.items())) for k, v in sorted(t.items())} for t in tables)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{cpu}, {os.cpu_count()} cores"


def render(rows, prefill, decode, threads: int, reps: int, runs: int = 1) -> str:
    """The module's MEASURED block (Python source)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    on = (f"{when}; {machine()}; ONNX Runtime {ort.__version__} CPU, {threads} threads; "
          f"best of {reps} interleaved runs (decode steps: {max(reps, 20)}) in {runs} "
          f"pass(es); benchmarks/ort_target_probe.py --fit --runs {runs}")
    parts = on.split("; ")
    out = ["# BEGIN MEASURED (written by benchmarks/ort_target_probe.py --update)",
           "MEASURED_ON = ("]
    out += [f"    {p + ('; ' if i < len(parts) - 1 else '')!r}" for i, p in enumerate(parts)]
    out += [")", "PREFILL: dict[str, tuple[tuple[float, float], ...]] = {"]
    for kind, points in prefill.items():
        out.append(f"    {kind!r}: {points!r},")
    out += ["}", "DECODE: dict[str, tuple[tuple[float, float], ...]] = {"]
    out += [f"    {kind!r}: {points!r}," for kind, points in decode.items()]
    out += ["}", "CASES: tuple[tuple[str, str, float, float, float], ...] = ("]
    out += [f"    {row!r}," for row in rows]
    out += [")", "# END MEASURED"]
    return "\n".join(out)


def update_module(block: str, path: Path = MODULE) -> None:
    """Replace the MEASURED block of ``attndsl/lower/ort_cost.py``."""
    text = path.read_text()
    start = text.index("# BEGIN MEASURED")
    end = text.index("# END MEASURED") + len("# END MEASURED")
    path.write_text(text[:start] + block + text[end:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="lengths / 8 (a smoke run; with --update it writes those)")
    ap.add_argument("--fit", action="store_true",
                    help="measure the ort target's cost model constants "
                    "(attndsl/lower/ort_cost.py)")
    ap.add_argument("--runs", type=int, default=1,
                    help="with --fit: passes over every shape (the best time of all)")
    ap.add_argument("--update", action="store_true",
                    help="with --fit: write the constants into attndsl/lower/ort_cost.py")
    args = ap.parse_args(argv)
    if args.fit:
        best: dict[tuple, tuple] = {}
        for _ in range(args.runs):  # the best of several passes over every shape
            for row in fit_measure(args.threads, args.reps, 8 if args.quick else 1):
                key = row[:4]
                best[key] = min(best.get(key, row), row, key=lambda r: r[4])
        rows = list(best.values())
        block = render(rows, *fit(rows), args.threads, args.reps, args.runs)
        print(block)
        if args.update:
            update_module(block)
            print(f"wrote {MODULE}")
        return 0
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
