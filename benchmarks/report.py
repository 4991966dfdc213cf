"""Turn the measurements into tables (console, markdown), JSON, the targets, and a plot.

As a command, the targets of finished runs (no measuring):

    python benchmarks/report.py benchmarks/results/results.json     # met / missed per target
    python benchmarks/report.py run1.json run2.json run3.json       # each run's value, "3 of 3"
    python benchmarks/report.py run*.json --issue 11 --markdown     # one issue, as markdown
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"  # noqa: A001

from .cases import Case
from .peers import Runner
from .targets import SUBJECT, TARGETS, Target, met, verdict
from .variants import Variant

COLUMNS = ("runner", "median ms", "IQR %", "n", "t / t(attndsl)", "GFLOP/s", "peak MiB",
           "setup s", "max |Δ|", "note")
TARGET_COLUMNS = ("issue", "target", "bound", "attndsl default", "verdict", "best attndsl variant",
                  "note")
COST_COLUMNS = ("case", "plan", "estimated ms", "measured ms", "estimated dense ms",
                "measured dense ms", "estimated speedup", "measured speedup")
_ESTIMATE = re.compile(r"estimated ([0-9.e+]+) ms vs dense ([0-9.e+]+) ms")
FUSED = ("ort-mha", "ort-gqa", "onnx-attention")
PROBE = "memcpy"  # decode cases: every runner's time is also shown relative to this probe


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _iqr_pct(xs: list[float]) -> float | None:
    if len(xs) < 4:
        return None
    q = statistics.quantiles(xs, n=4)
    return 100.0 * (q[2] - q[0]) / statistics.median(xs)


class Report:
    def __init__(self, anchor: str, runners: list[Runner], variants: list[Variant]):
        self.anchor = anchor
        self.runners = runners
        self.variants = variants
        self.cases: dict[str, dict[str, Any]] = {}
        self.scaling: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The report of a finished run, from its JSON (re-render without re-measuring)."""
        variants = {f"attndsl {v.label}": v for v in (Variant(**d) for d in data["variants"])}

        def unusable(*_):
            raise RuntimeError("a report read from JSON cannot measure")

        runners = [Runner(r["name"], r["family"], r["what"], unusable,
                          variant=variants.get(r["name"])) for r in data["runners"]]
        report = cls(data["anchor"], runners, list(variants.values()))
        for name, entry in data["cases"].items():
            timings = [{**g, "results": {k: {**v, "times": [tuple(t) for t in v["times"]]}
                                         if "times" in v else v
                                         for k, v in g.get("results", {}).items()}}
                       for g in entry["timings"]]
            report.cases[name] = {"case": Case(**entry["case"]), "status": entry["status"],
                                  "timings": timings}
        report.scaling = data.get("scaling")
        return report

    # -------------------------------------------------------------- data
    def add_case(self, case: Case, status: dict[str, dict], timings: list[dict]) -> None:
        self.cases[case.name] = {"case": case, "status": status, "timings": timings}

    def add_scaling(self, result: dict[str, Any]) -> None:
        self.scaling = result

    def growth(self, subject: str, small: str, large: str) -> tuple[float | None, str]:
        """t(large) / t(small) of one runner: paired from the scaling process when it ran
        there, else the ratio of the two cases' medians (two processes, unpaired)."""
        res = (self.scaling or {}).get("results", {})
        a = dict(res.get(f"{small}|{subject}", {}).get("times", []))
        pairs = [t / a[r] for r, t in res.get(f"{large}|{subject}", {}).get("times", [])
                 if r in a]
        if pairs:
            return _median(pairs), "paired, one process"
        ts, tl = self.times(small, subject), self.times(large, subject)
        return (_median(tl) / _median(ts), "unpaired (two processes)") if ts and tl else \
            (None, "")

    def _series(self, case: str, runner: str, group: dict) -> list[tuple[int, float]] | None:
        res = group.get("results", {}).get(f"{case}|{runner}")
        return res.get("times") if res else None

    def _group_of(self, case: str, runner: str) -> dict | None:
        for group in self.cases[case]["timings"]:
            if self._series(case, runner, group):
                return group
        return None

    def _resolve(self, case: str, runner: str) -> str:
        return self.cases[case]["status"].get(runner, {}).get("alias_of", runner)

    def times(self, case: str, runner: str) -> list[float]:
        if case not in self.cases:
            return []
        runner = self._resolve(case, runner)
        group = self._group_of(case, runner)
        return [t for _, t in self._series(case, runner, group)] if group else []

    def ok(self, case: str, runner: str) -> bool:
        return bool(self.times(case, runner))

    def ratio(self, case: str, a: str, b: str) -> float | None:
        """time(a) / time(b), paired round by round where a and b were timed together,
        else chained through the anchor (each leg paired)."""
        if case not in self.cases:
            return None
        a, b = self._resolve(case, a), self._resolve(case, b)
        if a == b:
            return 1.0
        for group in self.cases[case]["timings"]:
            sa, sb = self._series(case, a, group), self._series(case, b, group)
            if sa and sb:
                tb = dict(sb)
                return _median([t / tb[r] for r, t in sa if r in tb])
        if self.anchor not in (a, b):
            ra, rb = self.ratio(case, a, self.anchor), self.ratio(case, b, self.anchor)
            return ra / rb if ra and rb else None
        return None

    def peak_mib(self, case: str, runner: str) -> float | None:
        if case not in self.cases:
            return None
        return self.cases[case]["status"].get(self._resolve(case, runner), {}).get("peak_mib")

    def _result(self, case: str, runner: str) -> dict[str, Any]:
        runner = self._resolve(case, runner)
        group = self._group_of(case, runner)
        return group["results"][f"{case}|{runner}"] if group else {}

    # -------------------------------------------------------------- rows
    def columns(self, case_name: str) -> tuple[str, ...]:
        """The per-case table's columns: decode cases with a timed memcpy probe add
        ``t / t(memcpy)`` after the ratio to attndsl."""
        if not self.ok(case_name, PROBE):
            return COLUMNS
        at = COLUMNS.index("t / t(attndsl)") + 1
        return COLUMNS[:at] + (f"t / t({PROBE})",) + COLUMNS[at:]

    def rows(self, case_name: str) -> list[list[str]]:
        entry = self.cases[case_name]
        case: Case = entry["case"]
        probe = self.ok(case_name, PROBE)
        out = []
        for r in self.runners:
            st = entry["status"].get(r.name, {})
            name = r.name + (" *" if r.name == self.anchor else "")
            if "skip" in st or "error" in st:
                why = st.get("skip") or st.get("error")
                if "skip" not in st and st.get("error"):
                    why = "failed: " + why
                out.append([name, "—", "", "", "", *[""] * probe, "", "", "", "", why])
                continue
            times = self.times(case_name, r.name)
            res = self._result(case_name, r.name)
            if not times:
                why = res.get("error") or res.get("skip") or "not timed"
                for group in entry["timings"]:
                    why = group.get("results", {}).get(f"{case_name}|{r.name}", {}).get(
                        "error") or group.get("error") or why
                out.append([name, "—", "", "", "", *[""] * probe, "",
                            _f(st.get("peak_mib"), 1), _f(st.get("setup_s"), 2), "", why])
                continue
            ms = _median(times) * 1e3
            ratio = self.ratio(case_name, r.name, self.anchor)
            note = [f"= {st['alias_of']}"] if "alias_of" in st else []
            diff = res.get("max_abs_diff")
            if diff is not None and diff > 1e-3:
                note.append(f"OUTPUT DIFFERS from {res.get('reference')}")
            info = res.get("info", {})
            if info.get("compile_s") and r.family == "torch":
                note.append(f"compile {info['compile_s']:.1f} s" if info.get("compiled")
                            else "eager (not compiled)")
            if info.get("explain"):  # "block: lowering (why)" -> the lowering's name
                note.append(", ".join(e.split(" (", 1)[0].split(": ", 1)[-1]
                                      for e in info["explain"]))
            if r.family == "probe" and case.cache_bytes():
                note.append(f"{case.cache_bytes() / 2**20:.1f} MiB at "
                            f"{case.cache_bytes() / (ms / 1e3) / 1e9:.1f} GB/s")
            if case.pattern == "loop":
                note.append(f"{case.new_tokens / (ms / 1e3):.0f} new tokens/s")
            vs_probe = [_f(self.ratio(case_name, r.name, PROBE), 2) + "×"] if probe else []
            out.append([name, _f(ms, 1 if ms >= 10 else 3 if ms < 1 else 2),
                        _f(_iqr_pct(times), 0), str(len(times)),
                        _f(ratio, 2) + ("×" if ratio else ""), *vs_probe,
                        "" if r.family == "probe" else _f(case.flops() / (ms / 1e3) / 1e9, 1),
                        _f(self.peak_mib(case_name, r.name), 1),
                        _f(res.get("setup_s", st.get("setup_s")), 2),
                        f"{diff:.1e}" if diff is not None else "", "; ".join(note)])
        return out

    # -------------------------------------------------------------- targets
    def targets(self, targets: list[Target] | None = None) -> list[dict[str, Any]]:
        """The issues' targets (``benchmarks/targets.py``), for attndsl's default variant and
        its best variant. Each value is a paired ratio where the two were timed together
        (else chained through the anchor); a note says when it is not."""
        subjects = [r.name for r in self.runners if r.family == "attndsl"]
        out = []
        for t in TARGETS if targets is None else targets:
            row: dict[str, Any] = {"id": t.id, "issue": t.issue, "target": t.label,
                                   "case": t.case, "op": t.op, "threshold": t.bound,
                                   "bound": f"{t.op} {t.bound:g}",
                                   "measured": t.case in self.cases}
            if row["measured"]:  # variants that compiled to the anchor's bytes add nothing
                values = {sub: self.metric(t, sub) for sub in subjects
                          if "alias_of" not in self.cases[t.case]["status"].get(sub, {})}
                values = {sub: v for sub, v in values.items() if v and v[0] is not None}
                better = min if t.op in ("<=", "<") else max
                best = better(values, key=lambda k: values[k][0]) if values else None
                default = values.get(self.anchor, (None, ""))
                row.update(default=default[0], default_note=default[1], best=best,
                           best_value=values[best][0] if best else None,
                           best_note=values[best][1] if best else "")
            out.append(row)
        return out

    def metric(self, target: Target, subject: str) -> tuple[float | None, str]:
        """The value of ``target`` for the attndsl variant ``subject``, and a note."""
        def who(name: str) -> str:
            return subject if name == SUBJECT else name

        case, args = target.case, target.args
        if target.metric == "ratio":
            return self.ratio(case, who(args[0]), who(args[1])), ""
        if target.metric == "peak":
            return self.peak_mib(case, subject), ""
        if target.metric == "growth":
            return self.growth(subject, args[0], case)
        if target.metric == "peak_exponent":
            small, large = self.peak_mib(args[0], subject), self.peak_mib(case, subject)
            if not small or not large or small <= 0 or large <= 0:
                return None, ""
            lengths = self.cases[case]["case"].seq / self.cases[args[0]]["case"].seq
            return (math.log(large / small) / math.log(lengths),
                    f"peak {small:.0f} → {large:.0f} MiB")
        if target.metric == "vs_fused":
            return self._vs_fused(case, subject)
        if target.metric == "dense_masked":
            return self._dense_masked(case, args[0], subject)
        raise ValueError(f"target {target.id}: unknown metric {target.metric!r}")

    def _dense_masked(self, case: str, smaller: str, subject: str) -> tuple[float | None, str]:
        """The dense-masked graph is attndsl's own ``sparse=dense`` lowering of the same spec
        (else the exported SDPA graph). Where it did not fit under the memory cap, its time
        is extrapolated from the case at half the length: 4 × t(S/2), O(S²) work."""
        dense = next((r.name for r in self.runners if r.variant is not None
                      and r.variant.sparse == "dense" and r.variant.target in (None, "portable")),
                     None)
        for peer in [p for p in (dense, "export") if p and p != subject]:
            if self.ok(case, peer):
                return self.ratio(case, peer, subject), f"vs {peer.removeprefix('attndsl ')}"
        for peer in [p for p in (dense, "export") if p and p != subject]:
            there = self.ratio(smaller, peer, subject)  # paired at S/2
            grow, how = self.growth(subject, smaller, case)
            if there and grow:
                return (4 * there / grow,
                        f"estimated: {peer.removeprefix('attndsl ')} does not fit the memory "
                        f"cap at this length; 4 × (its time / attndsl's at {smaller}) / "
                        f"attndsl's growth to {case} ({how})")
        return None, ""

    def _vs_fused(self, case: str, subject: str) -> tuple[float | None, str]:
        """t(subject) / t(fastest of ORT's fused ops) on the same case."""
        ratios = {f: self.ratio(case, subject, f) for f in FUSED}
        ratios = {f: r for f, r in ratios.items() if r}
        if not ratios:
            return None, ""
        best = max(ratios, key=ratios.get)  # the fused op that makes attndsl look slowest
        return ratios[best], f"vs {best}"

    @staticmethod
    def verdict(value: float | None, op: str, bound: float) -> str:
        return verdict(value, op, bound)

    def target_rows(self) -> list[list[str]]:
        rows = []
        for t in self.targets():
            if not t["measured"]:
                rows.append([str(t["issue"]), t["target"], t["bound"], "", "case not run", "",
                             ""])
                continue
            d, b = t["default"], t["best_value"]
            best = (f"{_f(b, 2)} ({t['best'].removeprefix('attndsl ')}): "
                    f"{self.verdict(b, t['op'], t['threshold'])}") if t["best"] else ""
            rows.append([str(t["issue"]), t["target"], t["bound"], _f(d, 2),
                         self.verdict(d, t["op"], t["threshold"]), best,
                         "; ".join(dict.fromkeys(x for x in (t["default_note"], t["best_note"])
                                                 if x))])
        return rows

    # -------------------------------------------------------------- output
    def print_case(self, case: str) -> None:
        import sys

        print(_text_table(self.columns(case), self.rows(case), title=case), file=sys.stderr,
              flush=True)

    def console(self) -> str:
        parts = [_text_table(self.columns(c), self.rows(c), title=c) for c in self.cases]
        parts.append(_text_table(TARGET_COLUMNS, self.target_rows(), title="targets"))
        return "\n\n".join(parts)

    def markdown(self, env: dict[str, Any]) -> str:
        lines = ["# attndsl benchmark results", "",
                 f"{env['date']}; ORT {env['onnxruntime']}, PyTorch {env['torch']}, attndsl "
                 f"{env['attndsl']}; {env['threads']} threads on {env['cores']} cores; load "
                 f"average {env['load_avg_start']:.1f} at start, {env['load_avg_end']:.1f} at "
                 f"end; {env['wall_s']:.0f} s. `*` = attndsl's default variant (the anchor "
                 "of the ratios; t / t(attndsl) > 1 means attndsl is faster).", "",
                 "## Summary", "",
                 "Median ms of one call; in parentheses t / t(attndsl default), paired "
                 "(> 1: attndsl is faster); — not run (see the case's table for why).", "",
                 _md_table(*self.summary_rows()), ""]
        for name, entry in self.cases.items():
            c: Case = entry["case"]
            lines += [f"## {name}", "",
                      f"B={c.batch} H={c.heads} G={c.kv_heads} D={c.head_dim} "
                      f"q_len={c.q_len} k_len={c.k_len}; mask `{c.mask_expr}`; "
                      f"{c.attended_pairs():,} attended pairs per head "
                      f"({100 * c.attended_pairs() / (c.q_len * c.k_len):.1f}%)"
                      + (f"; one call: prefill {c.seq} positions, then {c.new_tokens} "
                         "single-position steps (RoPE, KV cache)" if c.pattern == "loop" else "")
                      + (f"; KV cache {c.cache_bytes() / 2**20:.1f} MiB" if c.cache_bytes()
                         else ""), "",
                      _md_table(self.columns(name), self.rows(name)), ""]
            lines += self._explanations(name)
        cost = self.cost_model_rows()
        if cost:
            lines += ["## Cost model check", "",
                      "attndsl's strategy choice (`sparse=auto`) estimates the chosen plan and "
                      "the dense graph; measured: this run's medians (dense: `sparse=dense`; "
                      "the speedup measured is the paired ratio).", "",
                      _md_table(COST_COLUMNS, cost), ""]
        lines += ["## Targets", "",
                  _md_table(TARGET_COLUMNS, self.target_rows()), ""]
        return "\n".join(lines)

    def summary_rows(self) -> tuple[list[str], list[list[str]]]:
        """One row per case: attndsl's default (ms, GFLOP/s, peak MiB), then every other
        runner as "ms (t / t(attndsl))"; aliases of the anchor are left out."""
        others = [r for r in self.runners[1:] if any(
            self.ok(n, r.name) and "alias_of" not in e["status"].get(r.name, {})
            for n, e in self.cases.items())]
        header = ["case", f"{self.anchor.removeprefix('attndsl ')} ms", "GFLOP/s", "peak MiB"]
        header += [r.name.removeprefix("attndsl ") for r in others]
        rows = []
        for name, entry in self.cases.items():
            t = _ms(self.times(name, self.anchor))
            row = [name, _f(t, 1), _f(entry["case"].flops() / t / 1e6, 1) if t else "",
                   _f(self.peak_mib(name, self.anchor), 0)]
            for r in others:
                mine = _ms(self.times(name, r.name))
                ratio = self.ratio(name, r.name, self.anchor)
                alias = entry["status"].get(r.name, {}).get("alias_of")
                row.append("= " + alias.removeprefix("attndsl ") if alias else
                           f"{_f(mine, 1)} ({_f(ratio, 2)}×)" if mine and ratio else
                           _f(mine, 1) if mine else "—")
            rows.append(row)
        return header, rows

    def cost_model_rows(self) -> list[list[str]]:
        """The sparse cost model's estimates (from attndsl's explanation: "estimated X ms vs
        dense Y ms") next to the measured times of the chosen plan and of ``sparse=dense``.
        The loop cases are left out: one call is a prefill and many steps, not the one
        attention the estimate is for."""
        dense = next((r.name for r in self.runners if r.variant is not None
                      and r.variant.sparse == "dense" and r.variant.target in (None, "portable")),
                     None)
        rows = []
        for name, entry in self.cases.items():
            if entry["case"].pattern == "loop":
                continue
            explain = " ".join(entry["status"].get(self.anchor, {}).get("info", {}).get(
                "explain") or self._result(name, self.anchor).get("info", {}).get(
                "explain") or [])
            found = _ESTIMATE.search(explain)
            if not found:
                continue
            est, est_dense = float(found[1]), float(found[2])
            got = _ms(self.times(name, self.anchor))
            got_dense = _ms(self.times(name, dense)) if dense else None
            plan = explain.split(": ", 1)[-1].split(" (", 1)[0]
            rows.append([name, plan, _f(est, 1), _f(got, 1), _f(est_dense, 1),
                         _f(got_dense, 1), _f(est_dense / est, 2),
                         _f(self.ratio(name, dense, self.anchor) if got_dense else None, 2)])
        return rows

    def _explanations(self, case: str) -> list[str]:
        """What each attndsl variant compiled to (``--explain``), under the case's table."""
        lines = []
        for r in self.runners:
            st = self.cases[case]["status"].get(r.name, {})
            explain = st.get("info", {}).get("explain") or self._result(case, r.name).get(
                "info", {}).get("explain")
            if r.family == "attndsl" and explain and "alias_of" not in st:
                lines.append(f"- {r.name.removeprefix('attndsl ')}: " + "; ".join(explain))
        return lines + [""] if lines else []

    def as_json(self, env: dict[str, Any]) -> dict[str, Any]:
        return {"env": env, "anchor": self.anchor,
                "variants": [asdict(v) for v in self.variants],
                "runners": [{"name": r.name, "family": r.family, "what": r.what}
                            for r in self.runners],
                "cases": {n: {"case": asdict(e["case"]), "name": n,
                              "attended_pairs": e["case"].attended_pairs(),
                              "flops": e["case"].flops(), "status": e["status"],
                              "timings": e["timings"],
                              "summary": {r.name: self._summary(n, r.name)
                                          for r in self.runners}}
                          for n, e in self.cases.items()},
                "scaling": self.scaling, "targets": self.targets()}

    def _summary(self, case: str, runner: str) -> dict[str, Any]:
        """The JSON summary of one runner on one case; decode cases with the memcpy probe
        add ``ratio_to_memcpy``, loop cases ``tokens_per_s`` (new tokens per second)."""
        c: Case = self.cases[case]["case"]
        ms = _ms(self.times(case, runner))
        out = {"median_ms": ms, "ratio_to_anchor": self.ratio(case, runner, self.anchor),
               "peak_mib": self.peak_mib(case, runner)}
        if self.ok(case, PROBE):
            out["ratio_to_memcpy"] = self.ratio(case, runner, PROBE)
        if c.pattern == "loop":
            out["tokens_per_s"] = c.new_tokens / (ms / 1e3) if ms else None
        return out

    def plot(self, path: Path) -> Path | None:
        """Median time vs S for the sliding cases (log-log), when there are at least two."""
        from .plot import line_plot

        sliding = [(e["case"].seq, n) for n, e in self.cases.items()
                   if e["case"].pattern == "sliding"]
        if len(sliding) < 2:
            return None
        series = {}
        for r in self.runners:
            pts = [(s, _ms(self.times(n, r.name))) for s, n in sorted(sliding)
                   if "alias_of" not in self.cases[n]["status"].get(r.name, {})]
            pts = [(s, t) for s, t in pts if t]
            if pts:
                series[r.name] = pts
        window = self.cases[sliding[0][1]]["case"].window
        return line_plot(series, path, f"sliding({window}): median time vs S "
                         "(B=1, H=12, D=64, ORT/torch CPU, 2 threads)", "S", "ms")


def _ms(times: list[float]) -> float | None:
    return _median(times) * 1e3 if times else None


def _f(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _text_table(header, rows, title: str = "") -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    widths = [min(w, 60) for w in widths]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False))
    body = ["  ".join(str(x)[:60].ljust(w) for x, w in zip(row, widths, strict=False))
            for row in rows]
    return "\n".join(([f"[{title}]"] if title else []) + [line, "-" * len(line)] + body)


def _md_table(header, rows) -> str:
    def cell(x):
        return str(x).replace("|", "\\|")
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ targets over several runs
RUNS_COLUMNS = ("issue", "target", "bound", "attndsl default, each run", "default met",
                "best attndsl variant, each run", "best met")


def _held(values: list[float | None], op: str, bound: float) -> str:
    """"3 of 3 runs" (and how many runs did not measure it)."""
    got = [v for v in values if v is not None]
    if not got:
        return "not measured"
    text = f"{sum(met(v, op, bound) for v in got)} of {len(got)} runs"
    return text + (f" ({len(values) - len(got)} not measured)" if len(got) < len(values)
                   else "")


def runs_rows(reports: list[Report], issue: int | None = None) -> list[list[str]]:
    """One row per target: every run's value for attndsl's default and for its best
    variant, and in how many runs the target held."""
    chosen = [t for t in TARGETS if issue is None or t.issue == issue]
    per_run = [{row["id"]: row for row in r.targets(chosen)} for r in reports]
    rows = []
    for t in chosen:
        runs = [p[t.id] for p in per_run]
        default = [r.get("default") for r in runs]
        best = [r.get("best_value") for r in runs]
        best_text = ", ".join(
            f"{_f(r['best_value'], 2)} ({r['best'].removeprefix('attndsl ')})"
            if r.get("best") else "—" for r in runs)
        rows.append([str(t.issue), t.label, f"{t.op} {t.bound:g}",
                     ", ".join(_f(v, 2) if v is not None else "—" for v in default),
                     _held(default, t.op, t.bound), best_text, _held(best, t.op, t.bound)])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The targets of finished benchmark runs: met or "
                                "missed per target; with several result files, each run's "
                                "value and in how many runs the target held.")
    p.add_argument("results", nargs="+", help="results JSON files of benchmarks/run.py")
    p.add_argument("--issue", type=int, default=None, help="only this issue's targets")
    p.add_argument("--markdown", action="store_true", help="a markdown table")
    args = p.parse_args(argv)
    reports = [Report.from_json(json.loads(Path(f).read_text())) for f in args.results]
    if len(reports) == 1:
        rows = [r for r in reports[0].target_rows()
                if args.issue is None or r[0] == str(args.issue)]
        header = TARGET_COLUMNS
    else:
        rows, header = runs_rows(reports, args.issue), RUNS_COLUMNS
    print(_md_table(header, rows) if args.markdown else _text_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
