"""Dense vs block-sparse attndsl graphs (and PyTorch SDPA) on ONNX Runtime CPU: a small probe
for the block-sparse lowering and its cost model (the full harness is ``benchmarks/run.py``).

Core attention (``project: false``), B=1, H=12, D=64, float32, dynamic sequence dim (the
plan costs it at the measured length), ORT with 2 intra-op threads that do not spin (several
sessions share the cores), sequential execution.
Timing: one child process per case runs every variant on the same inputs, repetitions
interleaved (medians, and ratios within one process). Memory: one child per variant, peak
RSS (``ru_maxrss``) and RSS before the first run (inputs and session made).

Variants: ``dense`` / ``auto`` / ``block`` (``--sparse``), ``band<N>`` (band strategy, tile
N; ``band<N>p<P>``: in P runs of tiles), ``chunks<N>`` (N query chunks; for the ``dense``
pattern the chunked dense lowering), ``sdpa`` (PyTorch ``scaled_dot_product_attention``).

    python -m benchmarks.sparse_probe                      # the issue's shapes
    python -m benchmarks.sparse_probe --case sliding:8192 --variants dense,band64,band128
    python -m benchmarks.sparse_probe --export DIR         # ONNX files + manifest, then
    python benchmarks/sparse_probe.py --manifest DIR/manifest.json   # (no attndsl needed)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

H, D = 12, 64
MASKS = {"causal": "causal", "sliding": "causal & sliding(256)", "dense": "all"}
DEFAULT_CASES = ("causal:1024", "causal:2048", "causal:4096", "sliding:2048", "sliding:4096",
                 "sliding:8192", "sliding:16384")
DEFAULT_VARIANTS = "dense,auto,sdpa"
MEM_CAP = 24 << 30  # a dense graph at 16384 needs ~50 GiB: let it fail, not the machine
HERE = os.path.dirname(os.path.abspath(__file__))


def spec_text(pattern: str) -> str:
    mask = MASKS[pattern]
    mask_line = "" if mask == "all" else f"\n    mask: {mask}"
    return f"""\
attndsl: 1
name: probe_{pattern}
dims: {{batch: 1, seq: dynamic}}
inputs: {{q: [batch, seq, {H * D}], k: [batch, seq, {H * D}], v: [batch, seq, {H * D}]}}
blocks:
  attn:
    query: q
    key: k
    value: v
    project: false
    heads: {H}
    head_dim: {D}{mask_line}
outputs: {{y: attn}}
"""


def build(pattern: str, seq: int, variant: str) -> tuple[bytes, str]:
    """ONNX bytes and the plan's explanation."""
    from attndsl.api import parse_spec
    from attndsl.lower import onnx_portable as op
    from attndsl.lower.plan import Plan, SparseOptions

    model = parse_spec(spec_text(pattern), "probe.yaml")
    name, number, pieces = re.fullmatch(r"([a-z]+)(\d*)(?:p(\d+))?", variant).groups()
    number = int(number) if number else None
    mode = name if name in ("dense", "auto", "block") else "block"
    options = SparseOptions(mode, number if name == "band" else None, seq)

    class Probe(op.PortableLowering):
        def plan(self, b):
            plan = super().plan(b)
            if name == "chunks" and pattern == "dense":  # the chunked dense lowering
                return Plan("dense_chunks", f"probe: {number} chunks", chunks=number)
            if name == "chunks":
                assert plan.kind == "chunks", plan
                return dataclasses.replace(plan, chunks=number,
                                           reason=f"{plan.reason} (probe: {number} chunks)")
            assert name != "band" or plan.kind == "band", plan
            if pieces:
                return dataclasses.replace(plan, pieces=int(pieces),
                                           reason=f"{plan.reason} (probe: {pieces} runs)")
            return plan

    lowering = Probe(model, {}, 18, sparse=options)
    proto = lowering.run()
    e = lowering.explain[0]
    return proto.SerializeToString(), f"{e.lowering}: {e.reason}"


def session(data: bytes | str, profile: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = profile
    # idle sessions' spinning workers would steal the two cores from the one being timed
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def inputs(seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal((1, seq, H * D), dtype=np.float32) for n in "qkv"}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _Sdpa:
    def __init__(self, causal: bool):
        import torch

        torch.set_num_threads(2)
        self.torch, self.causal = torch, causal

    def run(self, _names, feed):
        torch = self.torch
        q, k, v = (torch.from_numpy(feed[n]).view(1, -1, H, D).transpose(1, 2) for n in "qkv")
        with torch.no_grad():
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return [o.transpose(1, 2).reshape(1, -1, H * D).numpy()]


def _runner(job: dict, variant: str):
    if variant == "sdpa":
        return _Sdpa(job["pattern"] == "causal"), "torch SDPA"
    files = job.get("files")
    if files:
        return session(files[variant]), job["plans"][variant]
    data, why = build(job["pattern"], job["seq"], variant)
    return session(data), why


def child_time(job: dict) -> dict:
    """Every variant on the same inputs, repetitions interleaved; medians in ms."""
    feed = inputs(job["seq"])
    runners = {v: _runner(job, v) for v in job["variants"]}
    outs = {v: r.run(None, feed)[0] for v, (r, _) in runners.items()}  # warm-up
    ref = outs[job["variants"][0]]
    times: dict[str, list[float]] = {v: [] for v in runners}
    for _ in range(job["reps"]):
        for v, (r, _) in runners.items():
            t = time.perf_counter()
            r.run(None, feed)
            times[v].append(1e3 * (time.perf_counter() - t))
    return {"median_ms": {v: statistics.median(t) for v, t in times.items()},
            "times_ms": times, "plan": {v: w for v, (_, w) in runners.items()},
            "max_diff": {v: float(np.abs(o - ref).max()) for v, o in outs.items()}}


def child_mem(job: dict) -> dict:
    feed = inputs(job["seq"])
    runner, _ = _runner(job, job["variant"])
    before = _rss_mib()
    for _ in range(2):
        runner.run(None, feed)
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_run_mib": before}


def child_profile(job: dict) -> dict:
    """Per-op-type kernel time (ms per run) from ORT's profiler."""
    feed = inputs(job["seq"])
    files = job.get("files")
    data = files[job["variant"]] if files else build(job["pattern"], job["seq"],
                                                     job["variant"])[0]
    s = session(data, profile=True)
    for _ in range(3):
        s.run(None, feed)
    with open(s.end_profiling()) as f:
        events = json.load(f)
    agg: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            agg[op] = agg.get(op, 0.0) + e["dur"] / 3000
    return {"ms_per_op": dict(sorted(agg.items(), key=lambda x: -x[1]))}


def _spawn(job: dict, timeout: float) -> dict:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEM_CAP, MEM_CAP))

    cmd = [sys.executable, os.path.join(HERE, "sparse_probe.py"), "--child", json.dumps(job)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=cap, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _variants_for(pattern: str, seq: int, variants: list[str]) -> list[str]:
    return [v for v in variants if not (v == "dense" and seq > 8192)
            and not (v == "sdpa" and pattern != "causal")
            and not (v.startswith("chunks") and pattern not in ("causal", "dense"))
            and not (v.startswith("band") and pattern != "sliding")]


def export(directory: str, cases: list[str], variants: list[str], reps: int) -> None:
    os.makedirs(directory, exist_ok=True)
    jobs = []
    for case in cases:
        pattern, seq = case.split(":")
        vs = _variants_for(pattern, int(seq), variants)
        files, plans = {}, {}
        for v in vs:
            if v == "sdpa":
                continue
            data, plans[v] = build(pattern, int(seq), v)
            files[v] = f"{pattern}_{seq}_{v}.onnx"
            with open(os.path.join(directory, files[v]), "wb") as f:
                f.write(data)
        jobs.append({"pattern": pattern, "seq": int(seq), "variants": vs, "reps": reps,
                     "files": files, "plans": plans})
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(jobs, f, indent=1)


def run_jobs(jobs: list[dict], mem: bool, profile: list[str]) -> list[dict]:
    results = []
    for job in jobs:
        timing = _spawn(dict(job, kind="time"), 3600)
        memory = {v: _spawn(dict(job, kind="mem", variant=v), 1800)
                  for v in job["variants"]} if mem and job.get("mem", True) else {}
        prof = {v: _spawn(dict(job, kind="profile", variant=v), 1800)
                for v in job["variants"] if f"{job['pattern']}:{job['seq']}:{v}" in profile}
        results.append({"case": f"{job['pattern']}:{job['seq']}", "timing": timing,
                        "memory": memory, "profile": prof})
        _print(results[-1], job["variants"])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", help="pattern:seq (causal, sliding, dense)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-mem", action="store_true")
    p.add_argument("--profile", action="append", default=[], help="pattern:seq:variant")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--export", metavar="DIR", help="write ONNX files and a manifest only")
    p.add_argument("--manifest", help="run the jobs of an exported manifest")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        job = json.loads(a.child)
        if job.get("files"):
            base = job["base"]
            job["files"] = {v: os.path.join(base, f) for v, f in job["files"].items()}
        run = {"time": child_time, "mem": child_mem, "profile": child_profile}[job["kind"]]
        print(json.dumps(run(job)))
        return 0
    cases = a.case or list(DEFAULT_CASES)
    variants = a.variants.split(",")
    if a.export:
        export(a.export, cases, variants, a.reps)
        return 0
    if a.manifest:
        with open(a.manifest) as f:
            jobs = [dict(j, base=os.path.dirname(os.path.abspath(a.manifest)))
                    for j in json.load(f)]
    else:
        jobs = []
        for case in cases:
            pattern, seq = case.split(":")
            jobs.append({"pattern": pattern, "seq": int(seq), "reps": a.reps,
                         "variants": _variants_for(pattern, int(seq), variants)})
    results = run_jobs(jobs, not a.no_mem, a.profile)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _print(result: dict, variants: list[str]) -> None:
    timing, mem = result["timing"], result["memory"]
    med = timing.get("median_ms", {})
    print(f"== {result['case']}" + (f"  ERROR {timing['error']}" if "error" in timing else ""))
    base = med.get("dense")
    for v in variants:
        if v not in med:
            continue
        ratio = f"  dense/this {base / med[v]:5.2f}x" if base else ""
        m = mem.get(v, {})
        peak = (f"  peak {m['peak_rss_mib']:6.0f} MiB (before run {m['rss_before_run_mib']:.0f})"
                if "peak_rss_mib" in m else f"  mem {m.get('error', '-')}")
        print(f"  {v:9s} {med[v]:8.1f} ms{ratio}{peak}  diff {timing['max_diff'][v]:.1e}")
        if v != "sdpa":
            print(f"            {timing['plan'][v][:160]}")
    if "sdpa" in med:
        print("  " + ", ".join(f"{v}/sdpa {med[v] / med['sdpa']:.2f}" for v in variants
                               if v != "sdpa" and v in med))
    for v, prof in result.get("profile", {}).items():
        ops = prof.get("ms_per_op", {})
        print(f"  profile {v}: " + ", ".join(f"{k} {t:.1f}" for k, t in list(ops.items())[:9]))


if __name__ == "__main__":
    sys.exit(main())
