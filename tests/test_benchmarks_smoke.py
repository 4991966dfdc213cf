"""The benchmark harness keeps working: a dry run on tiny shapes (not a timing test), and the
targets arithmetic on made-up measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not installed

from benchmarks.cases import Case  # noqa: E402
from benchmarks.peers import PEERS, Runner  # noqa: E402
from benchmarks.report import Report  # noqa: E402
from benchmarks.variants import Variant  # noqa: E402


def test_dry_run_every_runner_agrees(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--dry",
         "--cases", "sliding32-256", "decode", "--exclude", "flex", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["cases"]) == {"sliding32-256", "decode-64"}
    for name, case in data["cases"].items():
        for runner, summary in case["summary"].items():
            status = case["status"][runner]
            if "skip" in status or "alias_of" in status:
                continue
            assert "error" not in status, (name, runner, status)
            assert summary["median_ms"] is not None, (name, runner)
            result = next(g["results"][f"{name}|{runner}"] for g in case["timings"]
                          if f"{name}|{runner}" in g.get("results", {}))
            assert result["max_abs_diff"] < 1e-4, (name, runner, result)
            assert status["peak_mib"] > 0
    assert data["cases"]["sliding32-256"]["status"]["ort-mha"].get("skip") is None
    assert "no GQA" in data["cases"]["decode-64"]["status"]["ort-mha"]["skip"]
    assert "flex" not in data["cases"]["decode-64"]["status"]  # --exclude flex
    text = out.read_text()
    assert "## Targets" in text and "| attndsl" in text and "## Summary" in text
    again = tmp_path / "again.md"  # the report re-rendered from the JSON alone is the same
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--from-json",
         str(out.with_suffix(".json")), "--out", str(again)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert again.read_text() == text


@pytest.mark.parametrize("pattern", ["sliding", "bigbird"])
def test_flex_runner_matches_sdpa(pattern):
    """flex_attention (eager here; the dry run above leaves it out to stay fast) with the
    case's mask_mod attends the same pairs as SDPA with attndsl's evaluated mask."""
    pytest.importorskip("torch")
    from benchmarks.peers import Settings

    case = Case(pattern, 128, heads=2, kv_heads=2, head_dim=16, window=32)
    inputs, settings = case.inputs(), Settings(threads=1, compile_flex=False)
    runners = {p.name: p for p in PEERS}
    flex = runners["flex"].prepare(case, inputs, settings)
    sdpa = runners["sdpa-mask"].prepare(case, inputs, settings)
    diff = abs(flex.output(flex.call()) - sdpa.output(sdpa.call())).max()
    assert diff < 1e-5


def _fake_report(anchor_ms: list[float], peers: dict[str, list[float]],
                 case: Case, peak: float = 100.0) -> Report:
    anchor = Runner("attndsl portable/auto", "attndsl", "", lambda *a: None,
                    variant=Variant("portable", "auto", is_default=True))
    runners = [anchor] + [p for p in PEERS if p.name in peers]
    report = Report(anchor.name, runners, [anchor.variant])
    results = {f"{case.name}|{anchor.name}": {"times": list(enumerate(anchor_ms))}}
    for name, ms in peers.items():
        results[f"{case.name}|{name}"] = {"times": list(enumerate(ms))}
    status = {r.name: {"peak_mib": peak} for r in runners}
    report.add_case(case, status, [{"results": results}])
    return report


def test_targets_use_paired_ratios():
    # the machine slows down 2x halfway: paired ratios stay 2.0, medians of each would not
    case = Case("causal", 4096)
    report = _fake_report([1.0, 1.0, 2.0, 2.0, 2.0], {"export": [2.0, 2.0, 4.0, 4.0, 4.0],
                                                      "sdpa": [1.0, 1.0, 2.0, 2.0, 2.0]}, case)
    assert report.ratio(case.name, "export", "attndsl portable/auto") == pytest.approx(2.0)
    rows = {t["target"]: t for t in report.targets()}
    export = rows["causal S=4096: t(torch.onnx.export + ORT) / t(attndsl)"]
    assert export["default"] == pytest.approx(2.0)
    assert Report.verdict(export["default"], ">=", 1.8) == "met"
    sdpa = rows["causal S=4096: t(attndsl) / t(PyTorch SDPA is_causal)"]
    assert sdpa["default"] == pytest.approx(1.0)
    assert not rows["sliding(256) S=8192: t(dense-masked graph) / t(attndsl)"]["measured"]


def test_verdict_says_by_how_much():
    assert Report.verdict(1.5, ">=", 1.8) == "missed (1.20× short)"
    assert Report.verdict(1.32, "<=", 1.2) == "missed (1.10× short)"
    assert Report.verdict(900.0, "<", 1024.0) == "met"
    assert Report.verdict(None, "<", 1024.0) == "not measured"


def test_dense_vs_fused_takes_the_fastest_fused_op():
    case = Case("dense", 1024)
    report = _fake_report([10.0] * 3, {"ort-mha": [9.0] * 3, "onnx-attention": [12.0] * 3},
                          case)
    row = next(t for t in report.targets() if t["target"].startswith("dense S=1024"))
    assert row["default"] == pytest.approx(10.0 / 9.0)
    assert row["default_note"] == "vs ort-mha"


def test_case_masks_match_attended_pairs():
    for case in (Case("sliding", 512, window=64), Case("bigbird", 512),
                 Case("causal", 256), Case("decode", 64, heads=4, kv_heads=2)):
        assert case.bool_mask().sum() == case.attended_pairs()


def test_dense_masked_estimate_when_it_did_not_fit():
    """At S=8192 the dense graph is over the memory cap: 4 × its paired ratio at S=4096,
    divided by attndsl's paired growth from 4096 to 8192."""
    anchor = Runner("attndsl portable/auto", "attndsl", "", lambda *a: None,
                    variant=Variant("portable", "auto", is_default=True))
    dense = Runner("attndsl portable/dense", "attndsl", "", lambda *a: None,
                   variant=Variant("portable", "dense"))
    report = Report(anchor.name, [anchor, dense], [anchor.variant, dense.variant])
    s4, s8 = Case("sliding", 4096), Case("sliding", 8192)
    report.add_case(s4, {}, [{"results": {
        f"{s4.name}|{anchor.name}": {"times": [(0, 1.0), (1, 2.0)]},
        f"{s4.name}|{dense.name}": {"times": [(0, 5.0), (1, 10.0)]}}}])
    report.add_case(s8, {dense.name: {"skip": "predicted 16 GiB > cap"}}, [{"results": {
        f"{s8.name}|{anchor.name}": {"times": [(0, 2.0), (1, 2.0)]}}}])
    report.add_scaling({"results": {
        f"{s4.name}|{anchor.name}": {"times": [(0, 1.0), (1, 1.0)]},
        f"{s8.name}|{anchor.name}": {"times": [(0, 2.5), (1, 2.5)]}}})
    row = next(t for t in report.targets() if "dense-masked" in t["target"])
    assert row["default"] == pytest.approx(4 * 5.0 / 2.5)
    assert row["default_note"].startswith("estimated")


def test_dry_run_mla_case(tmp_path):
    """The mla decode case: attndsl's variants (absorbed), the plain form and attention over a
    full per-head K/V cache all compute the same layer output; the core-attention peers say
    why they do not apply."""
    pytest.importorskip("torch")
    out = tmp_path / "m.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--dry",
         "--cases", "mla", "--runners", "mla", "export", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    case = json.loads(out.with_suffix(".json").read_text())["cases"]["mla-64"]
    assert "whole layer" in case["status"]["export"]["skip"]
    for runner in ("attndsl portable/auto", "mla-plain", "mla-full-kv"):
        result = next(g["results"][f"mla-64|{runner}"] for g in case["timings"]
                      if f"mla-64|{runner}" in g.get("results", {}))
        assert result["max_abs_diff"] < 1e-4, (runner, result)
        assert case["summary"][runner]["median_ms"] is not None
