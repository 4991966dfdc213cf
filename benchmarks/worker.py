"""What runs in the measuring child processes: a memory job (one runner, alone) and a timing
job (several runners on the same inputs, repetitions interleaved), and the fork helper that
starts them under a memory cap and a wall-clock limit.

Peak memory: the child resets its peak-RSS counter (``/proc/self/clear_refs`` ← 5, so VmHWM
restarts at the current RSS) after the runner is prepared and reads VmHWM after two calls.
``peak_mib`` = that VmHWM − VmRSS before the runner was prepared: what the runner keeps (its
session, constants) plus the working memory of a call; compile/export transients are reported
separately as ``setup_peak_mib``. Without clear_refs the child falls back to VmHWM alone.
"""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import Case
from .peers import Runner, Settings, Skip

MIB = 2**20


# ------------------------------------------------------------------ memory counters
def _status_bytes(key: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Restart VmHWM at the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ jobs
def mem_job(case: Case, runner: Runner, settings: Settings) -> dict[str, Any]:
    """Prepare one runner alone, call it twice; memory deltas, setup and call times."""
    inputs = case.inputs()
    reset_peak()
    rss0 = _status_bytes("VmRSS")
    start = time.perf_counter()
    prepared = runner.prepare(case, inputs, settings)
    setup_s = time.perf_counter() - start
    setup_peak = _status_bytes("VmHWM") - rss0
    exact = reset_peak()
    kept = _status_bytes("VmRSS") - rss0
    calls = []
    for _ in range(2):
        t = time.perf_counter()
        prepared.call()
        calls.append(time.perf_counter() - t)
    peak = _status_bytes("VmHWM") - rss0
    return {"setup_s": setup_s, "setup_peak_mib": setup_peak / MIB, "kept_mib": kept / MIB,
            "peak_mib": peak / MIB, "calls_s": calls, "info": prepared.info,
            "method": "clear_refs+VmHWM" if exact else "VmHWM (no reset)"}


def plan_job(case: Case, variants: list, settings: Settings) -> dict[str, Any]:
    """Compile every attndsl variant (no run): its bytes' hash, the lowering it chose, or
    why it failed — so variants that compile to the same model are measured once."""
    from .variants import compile_variant, model_digest

    out = {}
    for v in variants:
        start = time.perf_counter()
        try:
            proto, explain = compile_variant(v, case.spec_text(settings.dynamic),
                                             case.seq if settings.dynamic else None)
        except Exception as err:  # noqa: BLE001 - reported per variant
            out[v.label] = {"error": _describe(err)}
            continue
        out[v.label] = {"sha": model_digest(proto), "explain": explain,
                        "compile_s": time.perf_counter() - start}
    return out


@dataclass
class Budget:
    min_reps: int = 5
    max_reps: int = 15
    seconds: float = 60.0  # stop once min_reps are done and this much time was spent timing
    slow_s: float = 2.0  # a runner slower than this (median) stops after slow_reps
    slow_reps: int = 3


REFERENCE_ORDER = ("sdpa-mask", "sdpa", "flex")


def time_job(items: list[tuple[Case, Runner]], settings: Settings,
             budget: Budget) -> dict[str, Any]:
    """Prepare every (case, runner), check outputs against one reference per case, warm up,
    then time rounds: each round calls every runner once, in alternating order (ABC CBA …)."""
    inputs = {c.name: c.inputs() for c in {c.name: c for c, _ in items}.values()}
    ready, results = [], {}
    outputs: dict[tuple[str, str], np.ndarray] = {}
    for case, runner in items:
        key = f"{case.name}|{runner.name}"
        try:
            prepared = runner.prepare(case, inputs[case.name], settings)
            first = time.perf_counter()
            out = prepared.output(prepared.call())
            first = time.perf_counter() - first
        except Skip as err:
            results[key] = {"skip": str(err)}
            continue
        except Exception as err:  # noqa: BLE001 - a failing peer is reported, not fatal
            results[key] = {"error": _describe(err)}
            continue
        if out is not None:  # the memcpy probes compute no attention output
            outputs[(case.name, runner.name)] = np.asarray(out, np.float32)
        results[key] = {"setup_s": prepared.setup_s, "first_s": first, "info": prepared.info}
        ready.append((key, prepared))
    _cross_check(items, outputs, results)
    for key, prepared in ready:  # warm-up: one more call unless a call is slow
        if results[key]["first_s"] < budget.slow_s:
            prepared.call()
    times: dict[str, list[tuple[int, float]]] = {k: [] for k, _ in ready}
    active = dict(ready)
    start, rnd = time.perf_counter(), 0
    while active and rnd < budget.max_reps:
        order = list(active.items())
        for key, prepared in order if rnd % 2 == 0 else reversed(order):
            t = time.perf_counter()
            prepared.call()
            times[key].append((rnd, time.perf_counter() - t))
        rnd += 1
        if rnd >= budget.min_reps and time.perf_counter() - start > budget.seconds:
            break
        for key in [k for k in active if len(times[k]) >= min(budget.slow_reps, budget.min_reps)
                    and statistics.median(t for _, t in times[k]) > budget.slow_s]:
            del active[key]
    for key, series in times.items():
        results[key]["times"] = series
    return {"results": results, "rounds": rnd}


def _cross_check(items, outputs, results) -> None:
    """max |output − reference| per runner; the reference is SDPA / flex when present."""
    for case in {c.name: c for c, _ in items}.values():
        names = [r.name for c, r in items if c.name == case.name and (c.name, r.name) in outputs]
        ref = next((n for n in REFERENCE_ORDER if n in names), names[0] if names else None)
        for name in names:
            diff = float(np.max(np.abs(outputs[(case.name, name)] - outputs[(case.name, ref)])))
            results[f"{case.name}|{name}"].update(reference=ref, max_abs_diff=diff)


def _describe(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().replace("\n", " ")
    return text[:300]


# ------------------------------------------------------------------ forked children
def run_forked(fn: Callable[..., dict[str, Any]], *args: Any, cap_bytes: int,
               timeout_s: float) -> dict[str, Any]:
    """Run ``fn(*args)`` in a forked child; its dict comes back as JSON. The child is killed
    when its RSS passes ``cap_bytes`` or it runs past ``timeout_s``; a Skip, an exception or
    a crash becomes ``{"skip": …}`` / ``{"error": …}``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            result = fn(*args)
        except Skip as err:
            result = {"skip": str(err)}
        except MemoryError:
            result = {"error": "out of memory (MemoryError)"}
        except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
            result = {"error": _describe(err), "trace": traceback.format_exc()[-3000:]}
            code = 1
        try:
            with os.fdopen(write_fd, "wb") as f:
                f.write(json.dumps(result, default=_jsonable).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    return _supervise(pid, read_fd, cap_bytes, timeout_s)


def _supervise(pid: int, read_fd: int, cap_bytes: int, timeout_s: float) -> dict[str, Any]:
    chunks, peak, killed = [], 0, None
    deadline = time.monotonic() + timeout_s
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], 0.05)
            if ready:
                data = pipe.read(1 << 16)
                if not data:
                    break
                chunks.append(data)
                continue
            rss = _status_bytes("VmRSS", pid)
            peak = max(peak, rss)
            if killed is None and rss > cap_bytes:
                killed = (f"killed: RSS {rss / 2**30:.1f} GiB passed the cap "
                          f"{cap_bytes / 2**30:.1f} GiB")
            elif killed is None and time.monotonic() > deadline:
                killed = f"killed: still running after {timeout_s:.0f} s"
            if killed:
                os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if killed:
        return {"error": killed}
    try:
        return json.loads(b"".join(chunks))
    except json.JSONDecodeError:
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.WEXITSTATUS(status)}")
        oom = " (likely the kernel's out-of-memory killer)" if os.WIFSIGNALED(status) and \
            os.WTERMSIG(status) == signal.SIGKILL else ""
        return {"error": f"the measuring process died: {how}{oom}"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
