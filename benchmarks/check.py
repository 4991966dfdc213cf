"""The regression check: every paired ratio of a run against a baseline run.

Absolute times move between machines and with the load; the ratios of one run (attndsl's time
and a peer's, paired round by round in the same process) move much less. So the check
compares ratios only: for every case of the baseline, every attndsl variant that was timed
(not an alias of another variant) and every peer (PyTorch, ONNX Runtime, the exported graph,
the memcpy probes), the ratio t(peer) / t(attndsl variant) in the baseline and now. attndsl
got worse against that peer by ``baseline / now − 1``; more than ``threshold`` (15% by
default) is a regression.

    python benchmarks/run.py --check benchmarks/results/results.json          # run, compare
    python benchmarks/run.py --check BASELINE.json --against RESULTS.json     # compare only

Verdicts: ``improved`` (better by more than the threshold), ``ok``, ``REGRESSED``, ``FAILED``
(the attndsl variant was timed in the baseline but failed now), ``missing`` (the case or
the pair was not measured now: not selected, skipped, over the memory cap), ``new`` (only
measured now). REGRESSED and FAILED make the check fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .report import Report, _md_table, _text_table

THRESHOLD = 0.15
COLUMNS = ("case", "attndsl", "peer", "baseline t(peer)/t(attndsl)", "now", "change",
           "verdict")
FAILING = ("REGRESSED", "FAILED")


@dataclass(frozen=True)
class Comparison:
    """One (case, attndsl variant, peer) pair: t(peer) / t(attndsl) in both runs."""

    case: str
    subject: str
    peer: str
    baseline: float | None
    now: float | None
    verdict: str

    @property
    def worse_by(self) -> float | None:
        """How much more time attndsl takes relative to the peer now: baseline/now − 1
        (0.16: 16% worse; negative: better)."""
        if self.baseline is None or self.now is None:
            return None
        return self.baseline / self.now - 1.0

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    def row(self) -> list[str]:
        change = self.worse_by
        text = ("" if change is None else f"{100 * change:.1f}% worse" if change > 0
                else f"{-100 * change:.1f}% better" if change < 0 else "same")
        return [self.case, self.subject.removeprefix("attndsl "), self.peer,
                _ratio(self.baseline), _ratio(self.now), text, self.verdict]


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}×"


def _subjects(report: Report, case: str) -> list[str]:
    """attndsl variants timed on ``case`` that are not aliases of another variant."""
    status = report.cases[case]["status"]
    return [r.name for r in report.runners if r.family == "attndsl"
            and "alias_of" not in status.get(r.name, {}) and report.ok(case, r.name)]


def _peers(report: Report, case: str) -> list[str]:
    return [r.name for r in report.runners if r.family != "attndsl" and report.ok(case, r.name)]


def _failed(report: Report, case: str, subject: str) -> bool:
    return bool(report.cases[case]["status"].get(subject, {}).get("error"))


def compare(baseline: Report, now: Report, threshold: float = THRESHOLD) -> list[Comparison]:
    """Every paired ratio of ``baseline`` next to the same ratio of ``now`` (and the pairs
    only ``now`` has, as ``new``), in the baseline's case order."""
    out: list[Comparison] = []
    for case in baseline.cases:
        here = case in now.cases
        for subject in _subjects(baseline, case):
            for peer in _peers(baseline, case):
                before = baseline.ratio(case, peer, subject)
                after = now.ratio(case, peer, subject) if here else None
                if before is None:
                    continue
                if after is None:
                    verdict = "FAILED" if here and _failed(now, case, subject) else "missing"
                else:
                    worse = before / after - 1.0
                    verdict = ("REGRESSED" if worse > threshold else
                               "improved" if worse < -threshold else "ok")
                out.append(Comparison(case, subject, peer, before, after, verdict))
    for case in now.cases:
        seen = {(c.subject, c.peer) for c in out if c.case == case}
        for subject in _subjects(now, case):
            for peer in _peers(now, case):
                ratio = now.ratio(case, peer, subject)
                if (subject, peer) not in seen and ratio is not None:
                    out.append(Comparison(case, subject, peer, None, ratio, "new"))
    return out


def summary(rows: list[Comparison], threshold: float) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    bad = sum(r.failed for r in rows)
    head = (f"regression check (threshold {100 * threshold:g}%): "
            + (f"{bad} of {len(rows)} ratios regressed or failed" if bad
               else f"no regression in {len(rows)} ratios"))
    return head + (f" ({parts})" if parts else "")


def table(rows: list[Comparison], markdown: bool = False) -> str:
    body = [r.row() for r in rows]
    return _md_table(COLUMNS, body) if markdown else _text_table(COLUMNS, body, title="check")


def check_files(baseline: dict[str, Any], now: dict[str, Any],
                threshold: float = THRESHOLD) -> tuple[list[Comparison], str]:
    """Compare two result JSONs (as loaded); the rows and the printed report."""
    rows = compare(Report.from_json(baseline), Report.from_json(now), threshold)
    return rows, table(rows) + "\n\n" + summary(rows, threshold)
