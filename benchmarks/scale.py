"""Checkpoint-scale compile benchmark: time, peak memory and bytes of compiling N chained
attention blocks with their weights read from a float32 safetensors file, measured against a
file-copy probe of the same bytes in the same run.

    .venv/bin/python benchmarks/scale.py                     # llama, 1,8,32 blocks
    .venv/bin/python benchmarks/scale.py --shape mla --blocks 1,8
    .venv/bin/python benchmarks/scale.py --quick             # hidden 1024
    .venv/bin/python benchmarks/scale.py --dry --json r.json # tiny (hidden 64): a smoke test

Each compile runs in a fresh child process (``--child``), so its peak RSS (``ru_maxrss``)
is the compile's alone: loading the spec, reading and checking the weights, lowering, the
graph passes, writing the model with external data. The weights file is written first,
streamed, one tensor at a time (``write_safetensors`` with ``Lazy`` sources). The probe reads
the weights file and writes the same number of bytes to a new file (1 MiB-free 64 MiB blocks,
then ``fsync``, as the compiler's atomic writes do). ``check``, ``viz`` and ``ir`` are timed
as CLI commands on the largest spec: they never read or make weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attndsl.safetensors_io import Lazy, write_safetensors  # noqa: E402

#: hidden, heads, kv_heads, head_dim (llama) or the MLA sizes, by shape and size.
_LLAMA = {"full": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128),
          "quick": dict(hidden=1024, heads=8, kv_heads=2, head_dim=128),
          "dry": dict(hidden=64, heads=4, kv_heads=2, head_dim=16)}
_MLA = {"full": dict(hidden=2048, heads=16, kv_lora_rank=512, nope=128, rope=64, v=128),
        "quick": dict(hidden=1024, heads=8, kv_lora_rank=256, nope=64, rope=32, v=64),
        "dry": dict(hidden=64, heads=4, kv_lora_rank=32, nope=16, rope=8, v=16)}
_PROBE_BLOCK = 1 << 26


def spec_text(shape: str, blocks: int, size: str) -> str:
    """A YAML spec of ``blocks`` chained blocks (each block's query is the previous one's
    output), causal, with RoPE: Llama-3-8B's attention or DeepSeek-V2-Lite's MLA."""
    if shape == "llama":
        s = _LLAMA[size]
        body = (f"    heads: {s['heads']}\n    kv_heads: {s['kv_heads']}\n"
                f"    head_dim: {s['head_dim']}\n    mask: causal\n"
                "    rope: {theta: 500000.0}\n")
    else:
        s = _MLA[size]
        body = (f"    heads: {s['heads']}\n    head_dim: {s['nope'] + s['rope']}\n"
                f"    v_head_dim: {s['v']}\n    mask: causal\n"
                f"    rope: {{theta: 10000.0, dim: {s['rope']}}}\n"
                f"    mla: {{kv_lora_rank: {s['kv_lora_rank']}, q_lora_rank: 0, "
                f"qk_nope_head_dim: {s['nope']}, qk_rope_head_dim: {s['rope']}, "
                f"v_head_dim: {s['v']}}}\n")
    lines = ["attndsl: 1", f"name: scale_{shape}_{blocks}", "dims:", "  batch: dynamic",
             "  seq: dynamic", f"  d_model: {s['hidden']}", "inputs:",
             "  x: [batch, seq, d_model]", "blocks:"]
    for i in range(blocks):
        lines.append(f"  b{i}:")
        lines.append(f"    query: {'x' if i == 0 else f'b{i - 1}'}")
        lines.append(body.rstrip("\n"))
    lines += ["outputs:", f"  y: b{blocks - 1}"]
    return "\n".join(lines) + "\n"


def write_weights(spec: Path, path: Path) -> int:
    """Write the spec's weights as float32 safetensors, one tensor made at a time; the
    number of weight bytes."""
    from attndsl.api import load_spec

    shapes = load_spec(spec).weight_shapes()

    def make(name: str, shp: tuple[int, ...]) -> Lazy:
        def produce() -> np.ndarray:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            bound = 1.0 / np.sqrt(shp[-1])
            return rng.uniform(-bound, bound, size=shp).astype(np.float32)
        return Lazy(shp, np.float32, produce)

    write_safetensors(path, [(n, make(n, tuple(s))) for n, s in sorted(shapes.items())])
    return sum(4 * int(np.prod(s)) for s in shapes.values())


def copy_probe(src: Path, dst: Path, nbytes: int) -> float:
    """Seconds to read ``nbytes`` of ``src`` and write them to ``dst`` (synced)."""
    t0 = time.perf_counter()
    left = nbytes
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while left > 0:
            chunk = fi.read(min(_PROBE_BLOCK, left))
            if not chunk:
                break
            fo.write(chunk)
            left -= len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    dt = time.perf_counter() - t0
    dst.unlink()
    return dt


def child(spec: str, weights: str, out: str) -> None:
    """The measured compile (in a fresh process): JSON with seconds and peak RSS bytes."""
    from attndsl import api

    t0 = time.perf_counter()
    api.compile_to(spec, out, weights=weights, external_data="always")
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"compile_s": dt, "peak_rss": peak}))


def verify_child(model: str) -> None:
    """``attndsl run MODEL --verify`` as the API does it (in a fresh process): JSON with
    seconds, peak RSS bytes and whether every output matched the reference."""
    from attndsl import api

    t0 = time.perf_counter()
    report = api.verify(model, sizes={"batch": 1, "seq": 7})
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"verify_s": dt, "verify_peak_rss": peak, "passed": report.passed}))


@dataclass
class Row:
    """One measured compile."""

    shape: str
    blocks: int
    params: int
    weight_bytes: int
    compile_s: float
    peak_rss: int
    written_bytes: int
    probe_s: float
    time_per_probe: float
    peak_per_weight: float
    verify_s: float = 0.0
    verify_peak_rss: int = 0
    verify_passed: bool = False


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def measure(shape: str, blocks: int, size: str, work: Path, verify: bool = True) -> Row:
    """Write the spec and its weights, compile in a child, run the probe, then (``verify``)
    ``run --verify`` the compiled model in another child."""
    spec = work / f"{shape}_{blocks}.yaml"
    spec.write_text(spec_text(shape, blocks, size))
    weights = work / f"{shape}_{blocks}.safetensors"
    wbytes = write_weights(spec, weights)
    os.sync()  # the compile must not pay for writing back the weights file just made
    out = work / f"{shape}_{blocks}.onnx"
    got = _run_child(["--child", str(spec), str(weights), str(out)], f"compile of {blocks}")
    data = Path(str(out) + ".data")
    written = out.stat().st_size + (data.stat().st_size if data.exists() else 0)
    os.sync()
    probe = copy_probe(weights, work / "probe.bin", wbytes)
    weights.unlink()
    ver = _run_child(["--verify-child", str(out)], f"verify of {blocks}") if verify else {}
    for p in (out, data):
        p.unlink(missing_ok=True)
    return Row(shape, blocks, wbytes // 4, wbytes, got["compile_s"], got["peak_rss"],
               written, probe, got["compile_s"] / probe, got["peak_rss"] / wbytes,
               ver.get("verify_s", 0.0), ver.get("verify_peak_rss", 0),
               ver.get("passed", False))


def _run_child(args: list[str], what: str) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       env=_env(), check=False)
    if r.returncode != 0:
        raise SystemExit(f"{what} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def time_tools(spec: Path) -> dict[str, float]:
    """Seconds of ``attndsl check``, ``viz`` and ``ir`` on ``spec`` (each a fresh process,
    the interpreter's start included)."""
    out: dict[str, float] = {}
    for cmd in (["check", str(spec)], ["viz", str(spec), "--len", "16"], ["ir", str(spec)]):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "attndsl", *cmd], capture_output=True,
                           text=True, env=_env(), check=False)
        out[cmd[0]] = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"attndsl {' '.join(cmd)} failed:\n{r.stderr}")
    return out


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def render(rows: list[Row], tools: dict[str, float], tools_blocks: int) -> str:
    """The markdown report: one row per compile, the scaling ratio, the tools' times."""
    lines = ["| shape | blocks | params | weights | compile s | peak RSS | written | probe s |"
             " time/probe | peak/weights | verify s | verify peak/weights |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ver = (f"{r.verify_s:.2f}{'' if r.verify_passed else ' (FAILED)'} | "
               f"{r.verify_peak_rss / r.weight_bytes:.2f}" if r.verify_peak_rss else "— | —")
        lines.append(f"| {r.shape} | {r.blocks} | {r.params / 1e6:.1f} M | "
                     f"{_gb(r.weight_bytes)} | {r.compile_s:.2f} | {_gb(r.peak_rss)} | "
                     f"{_gb(r.written_bytes)} | {r.probe_s:.2f} | {r.time_per_probe:.1f} | "
                     f"{r.peak_per_weight:.2f} | {ver} |")
    for shape in sorted({r.shape for r in rows}):
        by = {r.blocks: r.compile_s for r in rows if r.shape == shape}
        if 32 in by and 8 in by:
            lines.append(f"\n{shape}: time(32)/time(8) = {by[32] / by[8]:.2f}")
    if tools:
        lines.append(f"\nCLI on the {tools_blocks}-block spec (fresh process each): "
                     + ", ".join(f"`{k}` {v:.2f} s" for k, v in tools.items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the markdown report and write ``--json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="1,8,32", help="comma-separated block counts")
    p.add_argument("--shape", choices=("llama", "mla", "both"), default="llama")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="hidden 1024")
    size.add_argument("--dry", action="store_true", help="hidden 64 (smoke test)")
    p.add_argument("--tools-blocks", type=int, default=32,
                   help="block count of the spec check/viz/ir are timed on (0: skip)")
    p.add_argument("--workdir", help="where the weights and models go (default: a temp dir)")
    p.add_argument("--json", help="write the rows and tool times here")
    p.add_argument("--no-verify", action="store_true",
                   help="skip `run --verify` of each compiled model")
    p.add_argument("--child", nargs=3, metavar=("SPEC", "WEIGHTS", "OUT"),
                   help=argparse.SUPPRESS)
    p.add_argument("--verify-child", metavar="MODEL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.verify_child:
        verify_child(args.verify_child)
        return 0
    size_name = "dry" if args.dry else "quick" if args.quick else "full"
    blocks = [int(b) for b in args.blocks.split(",") if b]
    shapes = ["llama", "mla"] if args.shape == "both" else [args.shape]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="attndsl-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for shape in shapes:
            for n in blocks:
                rows.append(measure(shape, n, size_name, work, not args.no_verify))
                print(render(rows[-1:], {}, 0).splitlines()[-1], file=sys.stderr, flush=True)
        tools: dict[str, float] = {}
        if args.tools_blocks:
            spec = work / "tools.yaml"
            spec.write_text(spec_text(shapes[0], args.tools_blocks, size_name))
            tools = time_tools(spec)
        report = render(rows, tools, args.tools_blocks)
        print(report)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"size": size_name, "rows": [asdict(r) for r in rows],
                 "tools": tools, "tools_blocks": args.tools_blocks}, indent=1) + "\n")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
