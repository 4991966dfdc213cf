"""attndsl vs PyTorch and ONNX Runtime: one command, one table.

    .venv/bin/python benchmarks/run.py                     # full run (about half an hour)
    .venv/bin/python benchmarks/run.py --quick             # smaller shapes, fewer repetitions
    .venv/bin/python benchmarks/run.py --cases sliding causal-4096 --out /tmp/r.md
    .venv/bin/python benchmarks/run.py --quick --dry       # tiny shapes, seconds (smoke test)
    .venv/bin/python benchmarks/run.py --check benchmarks/results/results.json   # regressions
    .venv/bin/python benchmarks/run.py --check OLD.json --against NEW.json      # compare only

For each case: every runner is first prepared and called alone in a forked child (its peak
memory, setup time, and whether it fits under the cap), then the runners that fit are timed
together in one child on the same inputs, repetitions interleaved, and the ratios to attndsl's
default variant are taken round by round. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"  # noqa: A001

from benchmarks import cases as case_mod  # noqa: E402
from benchmarks.mla import MLA_RUNNERS  # noqa: E402
from benchmarks.peers import PEERS, Runner, Settings, attndsl_runner  # noqa: E402
from benchmarks.report import Report  # noqa: E402
from benchmarks.variants import discover  # noqa: E402
from benchmarks.worker import MIB, Budget, mem_job, plan_job, run_forked, time_job  # noqa: E402

GIB = 2**30
DEFAULT_OUT = Path("benchmarks/results/results.md")
# a check's own run must not overwrite the committed results
CHECK_OUT = Path(tempfile.gettempdir()) / "attndsl-bench-check" / "results.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller shapes, fewer repetitions")
    p.add_argument("--dry", action="store_true",
                   help="tiny shapes, 2 repetitions, eager flex_attention: checks the harness")
    p.add_argument("--cases", nargs="*", default=[],
                   help="patterns or case names (dense causal sliding bigbird decode mla, "
                        "causal-4096, sliding256-8192); default all")
    p.add_argument("--runners", nargs="*", default=[],
                   help="keep only runners whose name contains one of these")
    p.add_argument("--exclude", nargs="*", default=[],
                   help="drop runners whose name contains one of these")
    p.add_argument("--block-sizes", type=int, nargs="*", default=[],
                   help="also benchmark attndsl's block-sparse strategies at these block sizes")
    p.add_argument("--dynamic", action="store_true",
                   help="attndsl specs with a symbolic sequence dim (position-only patterns)")
    p.add_argument("--threads", type=int, default=None,
                   help="ORT intra-op / torch threads (default 2; 1 with --dry)")
    p.add_argument("--cap-gib", type=float, default=12.0,
                   help="memory cap per measuring process (killed above it)")
    p.add_argument("--max-dense-s", type=int, default=8192,
                   help="skip runners that compute all S^2 pairs above this S")
    p.add_argument("--reps", type=int, default=None, help="maximum timed rounds per case")
    p.add_argument("--budget-s", type=float, default=None,
                   help="timing seconds per case after the minimum rounds")
    p.add_argument("--no-mem", action="store_true",
                   help="skip the per-runner memory processes (no peak memory column)")
    p.add_argument("--from-json", metavar="JSON",
                   help="no measuring: rewrite the report (markdown, PNG, console) of a "
                        "finished run from its JSON")
    p.add_argument("--out", default=None,
                   help="markdown report; JSON and PNG are written next to it (default "
                        f"{DEFAULT_OUT}; with --check, {CHECK_OUT})")
    p.add_argument("--check", metavar="BASELINE",
                   help="regression check: run the benchmark (with the other options), then "
                        "flag every paired ratio more than --threshold worse than in this "
                        "results JSON; exit 1 when one is")
    p.add_argument("--against", metavar="RESULTS",
                   help="with --check: compare this results JSON with the baseline instead "
                        "of running")
    p.add_argument("--threshold", type=float, default=15.0,
                   help="--check: percent by which a ratio may get worse (default 15)")
    args = p.parse_args(argv)
    if args.against and not args.check:
        p.error("--against needs --check BASELINE")
    if args.out is None:
        args.out = str(CHECK_OUT if args.check else DEFAULT_OUT)
    return args


def _budget(args: argparse.Namespace) -> Budget:
    if args.dry:
        b = Budget(min_reps=2, max_reps=2, seconds=0.0, slow_s=1.0)
    elif args.quick:
        b = Budget(min_reps=3, max_reps=7, seconds=15.0, slow_s=1.5)
    else:
        b = Budget(min_reps=5, max_reps=15, seconds=45.0, slow_s=2.0)
    if args.reps is not None:
        b.max_reps = max(args.reps, 1)
        b.min_reps = min(b.min_reps, b.max_reps)
    if args.budget_s is not None:
        b.seconds = args.budget_s
    return b


def _preload() -> None:
    """Import the heavy modules once in the parent (no computation here), so the forked
    children start fast. Nothing may start a thread pool before the fork."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    from torch.nn.attention import flex_attention  # noqa: F401

    import attndsl.lower.compile  # noqa: F401


class Harness:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.settings = Settings(threads=args.threads, compile_flex=not args.dry,
                                 dynamic=args.dynamic)
        self.budget = _budget(args)
        self.cap = int(args.cap_gib * GIB)
        self.variants = discover(tuple(args.block_sizes))
        runners = [attndsl_runner(v) for v in self.variants] + PEERS + MLA_RUNNERS
        if args.runners:  # the anchor (attndsl's default variant) always stays
            runners = runners[:1] + [r for r in runners[1:]
                                     if any(w in r.name for w in args.runners)]
        self.runners = runners[:1] + [r for r in runners[1:]
                                      if not any(w in r.name for w in args.exclude)]
        self.anchor = runners[0].name  # attndsl's default variant
        self.report = Report(self.anchor, self.runners, self.variants)
        self.mem: dict[tuple[str, str], dict[str, Any]] = {}

    # -------------------------------------------------------------- per case
    def run_case(self, case: case_mod.Case) -> None:
        log(f"== {case.name}: H={case.heads} G={case.kv_heads} D={case.head_dim}, "
            f"mask {case.mask_expr}")
        status = self._plan(case)
        for r in self.runners:
            if r.name in status:
                continue
            why = self._skip_reason(case, r)
            if why:
                status[r.name] = {"skip": why}
                continue
            if self.args.no_mem:
                status[r.name] = {}
                continue
            res = run_forked(mem_job, case, r, self.settings, cap_bytes=self.cap,
                             timeout_s=600)
            status[r.name] = res
            self.mem[(case.name, r.name)] = res
            log(f"   mem  {r.name:<28} " + _mem_line(res))
        runnable = [r for r in self.runners if not status[r.name].get("skip")
                    and not status[r.name].get("error") and "alias_of" not in status[r.name]]
        groups = self._groups(runnable, status)
        timings = []
        for i, group in enumerate(groups):
            items = [(case, r) for r in group]
            res = run_forked(time_job, items, self.settings, self.budget,
                             cap_bytes=self.cap, timeout_s=1200)
            if "error" in res:
                log(f"   time group {i}: {res['error']}")
            timings.append({"runners": [r.name for r in group], **res})
        self.report.add_case(case, status, timings)
        self.report.print_case(case.name)

    def _skip_reason(self, case: case_mod.Case, r: Runner) -> str | None:
        why = r.applies(case)
        if why:
            return why
        quadratic = r.quadratic(case)
        if quadratic and case.q_len > self.args.max_dense_s:
            need = case.dense_cells() * 4 / GIB
            return (f"computes all S² pairs (one score tensor alone is {need:.0f} GiB); "
                    f"skipped above S={self.args.max_dense_s}")
        prev = self._previous_mem(case, r)
        if prev is not None:
            base_case, peak_mib = prev
            scale = (case.seq / base_case.seq) ** (2 if quadratic else 1)
            predicted = peak_mib * MIB * scale
            if predicted > self.cap:
                return (f"predicted {predicted / GIB:.1f} GiB (from {peak_mib / 1024:.1f} GiB at "
                        f"S={base_case.seq}) > cap {self.cap / GIB:.0f} GiB")
        return None

    def _previous_mem(self, case, r) -> tuple[case_mod.Case, float] | None:
        """The largest smaller case of the same pattern this runner was measured on, and its
        peak (the cap itself when it was killed for memory there)."""
        best = None
        for c in self.done:
            res = self.mem.get((c.name, r.name)) or {}
            if c.pattern != case.pattern or c.seq >= case.seq:
                continue
            if "peak_mib" in res:
                best = (c, res["peak_mib"])
            elif "killed: RSS" in res.get("error", ""):
                best = (c, self.cap / MIB)
        return best

    def _plan(self, case: case_mod.Case) -> dict[str, dict[str, Any]]:
        """Compile the attndsl variants in a child; variants that compile to the same bytes
        are measured once (the others are marked ``alias_of``), failures are reported."""
        mine = [(r, r.variant) for r in self.runners if r.variant is not None]
        plan = run_forked(plan_job, case, [v for _, v in mine], self.settings,
                          cap_bytes=self.cap, timeout_s=600)
        status: dict[str, dict[str, Any]] = {}
        seen: dict[str, str] = {}
        for r, v in mine:
            entry = plan.get(v.label, {"error": plan.get("error", "not compiled")})
            if "sha" in entry and entry["sha"] in seen:
                status[r.name] = {"alias_of": seen[entry["sha"]], "info": entry}
            elif "sha" in entry:
                seen[entry["sha"]] = r.name
            else:
                status[r.name] = {"error": "compile failed: " + entry["error"]}
        return status

    def _groups(self, runnable: list[Runner], status) -> list[list[Runner]]:
        """Runners timed together: the anchor in every group, the others packed so that the
        summed peak memory stays under 85% of the cap."""
        anchor = next((r for r in runnable if r.name == self.anchor), None)
        others = [r for r in runnable if r is not anchor]
        room = 0.85 * self.cap / MIB
        base = status.get(self.anchor, {}).get("peak_mib", 0.0) if anchor else 0.0
        groups: list[tuple[float, list[Runner]]] = []
        for r in sorted(others, key=lambda r: -status[r.name].get("peak_mib", 0.0)):
            need = max(status[r.name].get("peak_mib", 0.0), 0.0)
            for i, (used, members) in enumerate(groups):
                if used + need <= room:
                    groups[i] = (used + need, members + [r])
                    break
            else:
                groups.append((base + need, [r]))
        lead = [anchor] if anchor else []
        return [lead + members for _, members in groups] or ([lead] if lead else [])

    # -------------------------------------------------------------- sliding scaling
    def run_scaling(self, cases: list[case_mod.Case]) -> None:
        """attndsl's default on the sliding cases of S >= 4096 in one process, interleaved
        (the time(16384)/time(4096) target, and the S=8192/S=4096 leg of the dense-masked
        estimate), with flex_attention alongside for comparison."""
        sizes = (128, 256) if self.args.dry else (4096, 8192, 16384)
        chosen = [c for c in cases if c.pattern == "sliding" and c.seq in sizes]
        if len(chosen) < 2:
            return
        items = [(c, r) for r in self.runners if r.name in (self.anchor, "flex")
                 for c in chosen if self.report.ok(c.name, r.name)]
        if not items:
            return
        log(f"== scaling: {', '.join(f'{c.name}:{r.name}' for c, r in items)}")
        res = run_forked(time_job, items, self.settings, self.budget, cap_bytes=self.cap,
                         timeout_s=1200)
        self.report.add_scaling(res)

    def run(self, cases: list[case_mod.Case]) -> None:
        self.done: list[case_mod.Case] = []
        for case in cases:
            self.run_case(case)
            self.done.append(case)
        self.run_scaling(cases)


def _mem_line(res: dict[str, Any]) -> str:
    if "skip" in res or "error" in res:
        return res.get("skip") or res["error"]
    return (f"peak {res['peak_mib']:8.1f} MiB  setup {res['setup_s']:6.2f} s  "
            f"call {min(res['calls_s']) * 1e3:9.1f} ms")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime
    import torch

    import attndsl

    return {"date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "attndsl": attndsl.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": args.threads,
            "load_avg_start": os.getloadavg()[0], "args": vars(args)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rewrite(Path(args.from_json), Path(args.out))
    if args.check and args.against:
        return regression_check(Path(args.check), Path(args.against), args.threshold)
    if args.check and not Path(args.check).is_file():
        log(f"--check: no baseline results at {args.check}")
        return 2
    pool = (case_mod.dry_cases() if args.dry else
            case_mod.quick_cases() if args.quick else case_mod.full_cases())
    cases = case_mod.select(pool, args.cases)
    if not cases:
        log(f"no case matches {args.cases}; cases: {', '.join(c.name for c in pool)}")
        return 2
    cases.sort(key=lambda c: (case_mod.PATTERNS.index(c.pattern), c.seq))
    if args.threads is None:
        args.threads = 1 if args.dry else 2
    _preload()
    env = environment(args)
    harness = Harness(args)
    log(f"attndsl variants: {', '.join(v.label for v in harness.variants)} "
        f"(anchor: {harness.anchor}); load average {env['load_avg_start']:.1f} "
        f"on {env['cores']} cores")
    started = time.perf_counter()
    harness.run(cases)
    env["load_avg_end"] = os.getloadavg()[0]
    env["wall_s"] = round(time.perf_counter() - started, 1)
    env["budget"] = asdict(harness.budget)
    write(harness.report, env, Path(args.out))
    if args.check:
        return regression_check(Path(args.check), Path(args.out).with_suffix(".json"),
                                args.threshold)
    return 0


def regression_check(baseline: Path, results: Path, threshold_pct: float) -> int:
    """Print every paired ratio of ``results`` against ``baseline``; 1 when one regressed."""
    from benchmarks.check import check_files

    rows, text = check_files(json.loads(baseline.read_text()), json.loads(results.read_text()),
                             threshold_pct / 100.0)
    print(f"baseline {baseline}, now {results}\n{text}")
    return 1 if any(r.failed for r in rows) else 0


def write(report: Report, env: dict[str, Any], out: Path, with_json: bool = True) -> None:
    """The markdown at ``out``, the JSON and the sliding plot next to it; the console
    tables on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.markdown(env))
    if with_json:
        out.with_suffix(".json").write_text(json.dumps(report.as_json(env), indent=1))
    png = report.plot(out.with_name(out.stem + "_sliding.png"))
    print(report.console())
    log(f"wrote {out}" + (f", {out.with_suffix('.json')}" if with_json else "")
        + (f", {png}" if png else ""))


def rewrite(source: Path, out: Path) -> int:
    data = json.loads(source.read_text())
    same = out.with_suffix(".json").resolve() == source.resolve()
    write(Report.from_json(data), data["env"], out, with_json=not same)
    return 0


if __name__ == "__main__":
    sys.exit(main())
