"""Differential fuzzer: mutated example specs, compiled with random options, run in ONNX
Runtime on random sizes and compared with the float64 numpy reference.

Each mutant starts from a spec of examples/ or specs/ and gets one to three mutations: a
number changed (off by one, 0, negative, huge, a float), a mask or score primitive swapped
or its arguments changed, a flag flipped, a line deleted or duplicated, random characters.
It is then parsed, compiled (target portable / ort, sparse auto / dense / block, a block size,
an opset) and, when it compiles, run in ONNX Runtime on random sizes and past lengths and
checked with ``attndsl.api.compare``.

Outcomes: ``rejected`` (an AttnDSLError: the spec or an option is refused with a message),
``ok`` (ran and matched), and the failures, which must all be 0: ``crash`` (any other
exception, or the process killed), ``wrong`` (an output above the dtype's tolerance),
``nan`` (an output with NaN where the reference has none), ``timeout``. Every mutant runs in
a forked child, so its time and peak memory (``ru_maxrss``) are its own and a crash of one
cannot hide another.

Resource limits (attndsl/limits.py) are lowered for the fuzzer so that a mutant with a huge
number is refused quickly instead of compiling for minutes: see ``FUZZ_LIMITS``.

    python tools/fuzz.py --mutants 100000 --jobs 2 [--seed 0] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import select
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_FILES = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("examples/*.attn"),
                     *ROOT.glob("specs/*.yaml"), *ROOT.glob("specs/*.attn")])
FUZZ_LIMITS = {"ATTNDSL_MAX_WEIGHTS_GIB": "0.25", "ATTNDSL_MAX_CONSTANT_MIB": "64",
               "ATTNDSL_MAX_ANALYSIS_CELLS": "4000000", "ATTNDSL_MAX_RUN_GIB": "0.5"}
FAILURES = ("crash", "wrong", "nan", "timeout")

MASKS = ["causal", "none", "all", "sliding(4)", "sliding(1)", "window(-3, 2)", "window(0, 0)",
         "global(0)", "global(0, 3)", "random(1, block=4, seed=3)", "chunk(4)", "dilated(2, 3)",
         "strided(3)", "prefix(2)", "causal & sliding(3)", "causal | global(1)", "~causal",
         "heads(0)"]
SCORES = ["alibi", "softcap(30)", "softcap(0.5)", "relative_bias(buckets=8, max_distance=16)",
          "relative_bias(buckets=4, max_distance=3, bidirectional=false)"]
PRIMITIVES = ["causal", "sliding", "window", "global", "random", "chunk", "dilated", "strided",
              "prefix", "document", "padding", "none", "all", "heads", "alibi", "softcap",
              "relative_bias", "bias", "mask"]
FLAG_LINES = ["bias: true", "cache: true", "project: false", "kv_heads: 1", "kv_heads: 2",
              "head_dim: 8", "v_head_dim: 4", "out_dim: 24", "scale: 0.5",
              "rope: {theta: 10000}", "rope: {dim: 4}", "dtype: float16"]
_NUMBER = re.compile(r"(?<![A-Za-z_0-9.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![A-Za-z_0-9])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


@dataclass
class Mutant:
    """One mutant: the spec text, its file name (for the syntax), the mutations made, and
    the compile and run options."""

    index: int
    path: str
    text: str
    edits: list[str]
    options: dict
    run_seed: int
    size_rng: int


@dataclass
class Outcome:
    index: int
    kind: str  # ok | rejected | crash | wrong | nan | timeout
    stage: str = ""
    detail: str = ""
    seconds: float = 0.0
    peak_kib: int = 0
    edits: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- mutations


def _number(rng: random.Random, text: str) -> str:
    value = float(text)
    if not math.isfinite(value):  # an earlier mutation wrote 1e999
        value = 1.0
    choices = [str(int(value) + 1), str(int(value) - 1), "0", "-1", str(-abs(int(value))),
               str(10 ** rng.randint(4, 13)), f"{value + 0.5:g}", str(int(value) * 2),
               str(max(1, int(value) // 2)), "1", "2", "3", "1e999", "nan"]
    return rng.choice(choices)


def mutate(rng: random.Random, text: str, edits: list[str]) -> str:
    """One random mutation of ``text`` (recorded in ``edits``)."""
    op = rng.choice(["number"] * 6 + ["mask"] * 3 + ["score"] * 2 + ["flag_line"] * 3 + [
        "primitive", "flag", "flag", "delete", "duplicate", "chars", "operator"])
    lines = text.split("\n")
    if op == "number":
        found = [m for m in _NUMBER.finditer(text)  # not the format version
                 if not text[:m.start()].rstrip(" :").endswith("attndsl")]
        if found:
            m = rng.choice(found)
            new = _number(rng, m.group())
            edits.append(f"number {m.group()} -> {new} at {m.start()}")
            return text[:m.start()] + new + text[m.end():]
    if op in ("mask", "score"):
        yaml = "mask:" in text or "score:" in text
        key = op
        pat = re.compile(rf"^(\s*){key}(:|\s)(.*)$", re.M) if yaml or op == "mask" else None
        new = rng.choice(MASKS if op == "mask" else SCORES)
        if pat is not None and pat.search(text):
            m = pat.search(text)
            if op == "score" and yaml:
                new = f"[{new}]"
            sep = ": " if m.group(2) == ":" else " "
            edits.append(f"{op} -> {new}")
            return text[:m.start()] + f"{m.group(1)}{key}{sep}{new}" + text[m.end():]
    if op == "primitive":
        words = [m for m in _WORD.finditer(text) if m.group() in PRIMITIVES]
        if words:
            m = rng.choice(words)
            new = rng.choice(PRIMITIVES)
            edits.append(f"primitive {m.group()} -> {new}")
            return text[:m.start()] + new + text[m.end():]
    if op == "operator":
        ops = [i for i, c in enumerate(text) if c in "|&~"]
        if ops:
            i = rng.choice(ops)
            new = rng.choice(["|", "&", "& ~", ""])
            edits.append(f"operator {text[i]!r} -> {new!r}")
            return text[:i] + new + text[i + 1:]
    if op == "flag":
        words = [m for m in _WORD.finditer(text) if m.group() in ("true", "false",
                                                                      "float32", "float16")]
        if words:
            m = rng.choice(words)
            new = {"true": "false", "false": "true", "float32": "float16",
                   "float16": "float32"}[m.group()]
            edits.append(f"flag {m.group()} -> {new}")
            return text[:m.start()] + new + text[m.end():]
    if op == "flag_line":
        heads = [i for i, line in enumerate(lines) if re.match(r"\s*heads[:\s]", line)]
        if heads:
            i = rng.choice(heads)
            indent = re.match(r"\s*", lines[i]).group()
            flag = rng.choice(FLAG_LINES)
            if "attndsl:" not in text:  # the .attn syntax: `key value`, `rope { ... }`
                flag = re.sub(r"rope: \{(\w+): ([^}]*)\}", r"rope \1 = \2", flag)
                flag = flag.replace(": ", " ", 1)
            edits.append(f"insert line {flag!r} after {i + 1}")
            return "\n".join([*lines[:i + 1], indent + flag, *lines[i + 1:]])
    if op == "delete" and len(lines) > 1:
        i = rng.randrange(len(lines))
        edits.append(f"delete line {i + 1}")
        return "\n".join(lines[:i] + lines[i + 1:])
    if op == "duplicate":
        i = rng.randrange(len(lines))
        edits.append(f"duplicate line {i + 1}")
        return "\n".join([*lines[:i + 1], lines[i], *lines[i + 1:]])
    i = rng.randrange(len(text) + 1)
    junk = "".join(rng.choice(":-[]{}(),=|&~.#'\"\t\n 0123456789xé\x00") for _ in
                   range(rng.randint(1, 3)))
    edits.append(f"chars {junk!r} at {i}")
    return text[:i] + junk + text[i:]


def make_mutant(seed: int, index: int) -> Mutant:
    """The mutant ``index`` of the run ``seed`` (deterministic)."""
    from attndsl.lower.targets import TARGETS

    rng = random.Random(f"{seed}:{index}")
    path = rng.choice(SEED_FILES)
    text = path.read_text(encoding="utf-8")
    edits: list[str] = [path.name]
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        text = mutate(rng, text, edits)
    target = rng.choice(sorted(TARGETS))
    opsets = list(TARGETS[target].opsets)
    if rng.random() < 0.02:  # now and then an opset the target lacks: must be refused
        opsets = [16, 25]
    options = {"target": target, "opset": rng.choice(opsets),
               "sparse": rng.choice(["auto", "dense", "block", "block"]),
               "block_size": rng.choice([None, None, 1, 2, 4, 8, 16, 32])}
    return Mutant(index, path.name, text, edits, options, rng.randrange(1 << 16),
                  rng.randrange(1 << 30))


# ---------------------------------------------------------------- one mutant


def _sizes(model, rng: random.Random) -> tuple[dict[str, int], int]:
    sizes = {d.name: (rng.randint(1, 3) if d.name == "batch" else rng.randint(1, 24))
             for d in model.dims if d.size is None}
    past = rng.choice([0, 0, 1, 3, 8]) if any(b.cache for b in model.blocks) else 0
    return sizes, past


def evaluate(m: Mutant) -> Outcome:
    """Parse, compile, run and compare one mutant (in this process)."""
    import numpy as np

    from attndsl import api
    from attndsl.api._run import _random_inputs
    from attndsl.errors import AttnDSLError
    from attndsl.runtime import make_session, run_session

    stage = "parse"
    try:
        model = api.parse_spec(m.text, m.path)
        stage = "compile"
        proto = api.compile(model, **m.options)
        stage = "run"
        sizes, past = _sizes(model, random.Random(m.size_rng))
        # what api.execute does, less re-reading the spec from the model's metadata and
        # checking the graph against it (the untrusted-file path, tested on its own): a
        # seventh of a mutant's time
        inputs = _random_inputs(model, sizes, m.run_seed, past)
        session = make_session(proto)
        result = api.RunResult(model, proto, inputs, run_session(session, inputs),
                               session.get_providers()[0])
        stage = "compare"
        report = api.compare(result)
    except AttnDSLError as err:
        return Outcome(m.index, "rejected", stage, str(err).split("\n")[0][:300])
    except Exception as err:  # the fuzzer's point: anything else is a bug
        tb = traceback.format_exc(limit=-6)
        return Outcome(m.index, "crash", stage, f"{type(err).__name__}: {err}\n{tb}"[-3000:])
    nan = [n for n, v in result.outputs.items() if np.isnan(np.asarray(v, np.float64)).any()]
    if nan:
        return Outcome(m.index, "nan", "compare", f"NaN in {nan}; sizes {sizes} past {past}")
    if not report.passed:
        return Outcome(m.index, "wrong", "compare",
                       f"{report.max_errors} > {report.tolerance}; sizes {sizes} past {past}")
    return Outcome(m.index, "ok", "compare")


def _child(m: Mutant, fd: int) -> None:
    os.environ.update(FUZZ_LIMITS)
    try:
        out = evaluate(m)
    except BaseException as err:  # noqa: BLE001 - the child reports everything
        out = Outcome(m.index, "crash", "fuzzer", f"{type(err).__name__}: {err}")
    data = json.dumps({"kind": out.kind, "stage": out.stage, "detail": out.detail})
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os._exit(0)


def warm_up() -> None:
    """Import and exercise everything once in the parent, before forking, so that each child
    starts with the parsers built, ONNX Runtime initialised and caches filled (this doubles
    the throughput: a cold child spends more time warming up than on its mutant)."""
    from attndsl.lower.targets import TARGETS

    saved = {k: os.environ.get(k) for k in FUZZ_LIMITS}
    os.environ.update(FUZZ_LIMITS)
    try:
        seeds = [p for p in SEED_FILES if p.name in ("gpt2_causal.yaml", "gpt2_causal.attn",
                                                       "mistral_block.yaml")]
        for i, (path, target) in enumerate((p, t) for p in seeds for t in sorted(TARGETS)):
            text = path.read_text(encoding="utf-8")
            evaluate(Mutant(-1 - i, path.name, text, [], {"target": target}, 0, 0))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_batch(mutants: int, seed: int = 0, jobs: int = 1, timeout: float = 60.0,
              start: int = 0, on_outcome=None) -> list[Outcome]:
    """Run mutants ``start .. start + mutants - 1`` of ``seed``, ``jobs`` at a time, each in a
    forked child (time and peak memory per mutant from ``wait4``)."""
    warm_up()
    pending = iter(range(start, start + mutants))
    running: dict[int, tuple[Mutant, int, float, list[bytes]]] = {}
    outcomes: list[Outcome] = []
    exhausted = False
    while running or not exhausted:
        while not exhausted and len(running) < jobs:
            i = next(pending, None)
            if i is None:
                exhausted = True
                break
            m = make_mutant(seed, i)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(m, w)
            os.close(w)
            running[pid] = (m, r, time.monotonic(), [])
        fds = {r: pid for pid, (_, r, _, _) in running.items()}
        ready, _, _ = select.select(list(fds), [], [], 0.05) if fds else ([], [], [])
        for r in ready:
            chunk = os.read(r, 65536)
            if chunk:
                running[fds[r]][3].append(chunk)
        for pid, (m, r, t0, chunks) in list(running.items()):
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got == 0:
                continue
            while True:  # whatever is left in the pipe
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(r)
            del running[pid]
            seconds = time.monotonic() - t0
            try:
                data = json.loads(b"".join(chunks).decode())
                out = Outcome(m.index, data["kind"], data["stage"], data["detail"])
            except ValueError:
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                kind = "timeout" if killed and seconds > timeout else "crash"
                out = Outcome(m.index, kind, "process", f"exit status {status}")
            out.seconds, out.peak_kib, out.edits = seconds, usage.ru_maxrss, m.edits
            outcomes.append(out)
            if on_outcome is not None:
                on_outcome(out)
    return outcomes


def summarize(outcomes: list[Outcome]) -> dict:
    """Counts by outcome, the failures, and the max time and peak memory of one mutant."""
    counts = Counter(o.kind for o in outcomes)
    slowest = max(outcomes, key=lambda o: o.seconds, default=None)
    biggest = max(outcomes, key=lambda o: o.peak_kib, default=None)
    return {"mutants": len(outcomes), **{k: counts.get(k, 0) for k in
                                          ("ok", "rejected", *FAILURES)},
            "stages_rejected": dict(Counter(o.stage for o in outcomes if o.kind == "rejected")),
            "max_seconds": round(slowest.seconds, 2) if slowest else 0.0,
            "slowest": slowest.edits if slowest else [],
            "max_peak_mib": round(biggest.peak_kib / 1024, 1) if biggest else 0.0,
            "mean_seconds": round(sum(o.seconds for o in outcomes) / max(len(outcomes), 1), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="index of the first mutant")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    p.add_argument("--log", help="write every failure (JSON lines) here")
    p.add_argument("--progress", type=int, default=1000, help="print counts every N mutants")
    args = p.parse_args(argv)
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115
    done: list[Outcome] = []
    t0 = time.monotonic()

    def record(o: Outcome) -> None:
        done.append(o)
        if o.kind in FAILURES:
            print(f"{o.kind} #{o.index} ({o.stage}) {o.edits}: {o.detail.splitlines()[0]}",
                  flush=True)
            if log:
                log.write(json.dumps(o.__dict__) + "\n")
                log.flush()
        if len(done) % args.progress == 0:
            s = summarize(done)
            print(f"[{time.monotonic() - t0:.0f}s] " + json.dumps(
                {k: s[k] for k in ("mutants", "ok", "rejected", *FAILURES, "max_seconds",
                                   "max_peak_mib")}), flush=True)

    run_batch(args.mutants, args.seed, args.jobs, args.timeout, args.start, record)
    s = summarize(done)
    s["wall_seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(s, indent=1))
    return 1 if any(s[k] for k in FAILURES) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
