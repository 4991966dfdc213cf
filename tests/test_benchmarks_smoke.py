"""The benchmark harness keeps working: a dry run on tiny shapes (not a timing test), the
targets arithmetic and the regression check on made-up measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not installed

from benchmarks import cases as case_mod  # noqa: E402
from benchmarks.cases import Case  # noqa: E402
from benchmarks.check import check_files, compare  # noqa: E402
from benchmarks.peers import PEERS, Runner  # noqa: E402
from benchmarks.report import Report, runs_rows  # noqa: E402
from benchmarks.report import main as report_main  # noqa: E402
from benchmarks.targets import SUBJECT, TARGETS  # noqa: E402
from benchmarks.variants import Variant  # noqa: E402

DRY = ["sliding32-256", "decode-64", "decode-64-b2", "loop16-32+16"]


def test_dry_run_every_runner_agrees(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--dry",
         "--cases", "sliding32-256", "decode", "loop", "--exclude", "flex", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.with_suffix(".json").read_text())
    assert list(data["cases"]) == DRY
    for name, case in data["cases"].items():
        for runner, summary in case["summary"].items():
            status = case["status"][runner]
            if "skip" in status or "alias_of" in status:
                continue
            assert "error" not in status, (name, runner, status)
            assert summary["median_ms"] is not None, (name, runner)
            result = next(g["results"][f"{name}|{runner}"] for g in case["timings"]
                          if f"{name}|{runner}" in g.get("results", {}))
            if runner.startswith("memcpy"):  # probes compute no attention: nothing to compare
                assert "max_abs_diff" not in result
            else:
                assert result["max_abs_diff"] < 1e-4, (name, runner, result)
            # a probe copies into arrays made at setup: its calls may add no resident pages
            assert status["peak_mib"] >= 0 if runner.startswith("memcpy") else \
                status["peak_mib"] > 0, (name, runner, status["peak_mib"])
    for name in ("decode-64", "decode-64-b2"):  # the probes ran, every runner is set beside them
        summary = data["cases"][name]["summary"]
        assert summary["memcpy"]["ratio_to_memcpy"] == 1.0
        assert summary["attndsl portable/auto"]["ratio_to_memcpy"] > 0
        assert summary["memcpy-ort"]["median_ms"] is not None
    assert data["cases"]["decode-64-b2"]["case"]["batch"] == 2
    loop = data["cases"]["loop16-32+16"]
    timed = {r for r, s in loop["summary"].items() if s["median_ms"] is not None}
    assert {"attndsl portable/auto", "attndsl ort/auto", "ort-gqa"} <= timed
    assert timed <= {r["name"] for r in data["runners"] if r["family"] == "attndsl"} | {"ort-gqa"}
    assert loop["summary"]["ort-gqa"]["tokens_per_s"] > 0
    assert "not for loop" in loop["status"]["sdpa"]["skip"]
    assert "memcpy" not in data["cases"]["sliding32-256"]["summary"] or \
        "skip" in data["cases"]["sliding32-256"]["status"]["memcpy"]
    assert {t["id"] for t in data["targets"]} == {t.id for t in TARGETS}
    assert data["cases"]["sliding32-256"]["status"]["ort-mha"].get("skip") is None
    assert "no GQA" in data["cases"]["decode-64"]["status"]["ort-mha"]["skip"]
    assert "flex" not in data["cases"]["decode-64"]["status"]  # --exclude flex
    text = out.read_text()
    assert "## Targets" in text and "| attndsl" in text and "## Summary" in text
    assert "t / t(memcpy)" in text and "new tokens/s" in text
    again = tmp_path / "again.md"  # the report re-rendered from the JSON alone is the same
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--from-json",
         str(out.with_suffix(".json")), "--out", str(again)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert again.read_text() == text
    proc = subprocess.run(  # the run against itself: every ratio equal, exit 0
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--check",
         str(out.with_suffix(".json")), "--against", str(out.with_suffix(".json"))],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no regression in" in proc.stdout and "REGRESSED" not in proc.stdout


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
    rows = {t["id"]: t for t in report.targets()}
    export = rows["i4-causal-export"]
    assert export["default"] == pytest.approx(2.0)
    assert Report.verdict(export["default"], ">=", 1.8) == "met"
    assert rows["i11-causal-export"]["default"] == pytest.approx(2.0)
    assert rows["i11-causal-export"]["threshold"] == 2.0
    sdpa = rows["i4-causal-sdpa"]
    assert sdpa["default"] == pytest.approx(1.0)
    assert not rows["i4-sliding-dense"]["measured"]


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


# ------------------------------------------------------------------ new cases, probes, targets
def test_case_names_and_cache_bytes():
    decode = Case("decode", 4096, heads=32, kv_heads=8, head_dim=128)
    assert decode.name == "decode-4096"
    assert decode.cache_bytes() == 33_554_432  # the issue's 33.5 MB
    b8 = Case("decode", 4096, heads=32, kv_heads=8, head_dim=128, batch=8)
    assert b8.name == "decode-4096-b8" and b8.cache_bytes() == 8 * decode.cache_bytes()
    loop = Case("loop", 512, **case_mod.MISTRAL, new_tokens=256)
    assert loop.name == "loop256-512+256" and loop.q_len == loop.k_len == 768
    assert loop.cache_bytes() == 0
    assert "rope:" in loop.spec_text() and "seq: dynamic" in loop.spec_text()
    names = [c.name for c in case_mod.full_cases()]
    assert len(names) == len(set(names))
    for old in ("dense-1024", "causal-4096", "sliding256-16384", "bigbird-4096", "decode-4096"):
        assert old in names  # the first round's cases stay


def test_loop_mask_matches_attended_pairs():
    case = Case("loop", 48, heads=4, kv_heads=2, head_dim=16, window=16, new_tokens=16)
    assert case.bool_mask().sum() == case.attended_pairs()


def test_targets_are_well_formed():
    """Every target names a case of the full run and runners the harness has."""
    ids = [t.id for t in TARGETS]
    assert len(ids) == len(set(ids))
    full = {c.name for c in case_mod.full_cases()}
    runners = {p.name for p in PEERS} | {SUBJECT}
    for t in TARGETS:
        assert t.case in full, t
        if t.metric == "ratio":
            assert set(t.args) <= runners, t
        if t.metric in ("growth", "peak_exponent", "dense_masked"):
            assert t.args[0] in full, t
    issue11 = {t.id for t in TARGETS if t.issue == 11}
    for case in ("decode-4096", "decode-4096-b8"):
        assert {f"i11-{case}-vs-gqa", f"i11-{case}-vs-memcpy"} <= issue11


def _report(cases: dict[Case, dict[str, list[float]]], peaks: dict[str, float] | None = None,
            anchor_name: str = "attndsl portable/auto") -> Report:
    """A report with made-up times: {case: {runner: times per round}} (the anchor's included)
    and optional peak MiB per case name, all timed in one group."""
    anchor = Runner(anchor_name, "attndsl", "", lambda *a: None,
                    variant=Variant("portable", "auto", is_default=True))
    names = {n for series in cases.values() for n in series}
    runners = [anchor] + [p for p in PEERS if p.name in names]
    report = Report(anchor.name, runners, [anchor.variant])
    for case, series in cases.items():
        results = {f"{case.name}|{n}": {"times": list(enumerate(ts))} for n, ts in series.items()}
        peak = (peaks or {}).get(case.name, 100.0)
        report.add_case(case, {n: {"peak_mib": peak} for n in series}, [{"results": results}])
    return report


def test_decode_targets_against_gqa_and_memcpy():
    anchor = "attndsl portable/auto"
    case = Case("decode", 4096, heads=32, kv_heads=8, head_dim=128)
    report = _report({case: {anchor: [24.0, 48.0, 24.0], "ort-gqa": [15.0, 30.0, 15.0],
                             "memcpy": [4.0, 8.0, 4.0]}})
    rows = {t["id"]: t for t in report.targets()}
    assert rows["i11-decode-4096-vs-gqa"]["default"] == pytest.approx(1.6)
    assert rows["i11-decode-4096-vs-memcpy"]["default"] == pytest.approx(6.0)
    assert Report.verdict(6.0, "<=", 3.0) == "missed (2.00× short)"
    assert not rows["i11-decode-4096-b8-vs-gqa"]["measured"]
    assert report.columns(case.name)[5] == "t / t(memcpy)"
    row = next(r for r in report.rows(case.name) if r[0].startswith(anchor))
    assert row[5] == "6.00×"
    memcpy = next(r for r in report.rows(case.name) if r[0] == "memcpy")
    assert memcpy[5] == "1.00×" and memcpy[6] == ""  # no GFLOP/s for a copy
    assert "GB/s" in memcpy[-1]


def test_dense_peak_exponent_and_loop_target():
    anchor = "attndsl portable/auto"
    d1, d4 = Case("dense", 1024), Case("dense", 4096)
    loop = Case("loop", 512, **case_mod.MISTRAL, new_tokens=256)
    report = _report({d1: {anchor: [1.0] * 3, "ort-mha": [1.0] * 3},
                      d4: {anchor: [16.0] * 3, "ort-mha": [20.0] * 3},
                      loop: {anchor: [1.1] * 3, "ort-gqa": [1.0] * 3}},
                     peaks={d1.name: 50.0, d4.name: 800.0})
    rows = {t["id"]: t for t in report.targets()}
    assert rows["i11-dense-peak-exponent"]["default"] == pytest.approx(2.0)  # 16x for 4x S
    assert rows["i11-dense-4096-mha"]["default"] == pytest.approx(0.8)
    assert rows["i11-loop-vs-gqa"]["default"] == pytest.approx(1.1)
    assert Report.verdict(1.1, "<=", 1.2) == "met"
    note = next(r for r in report.rows(loop.name) if r[0].startswith(anchor))[-1]
    assert "233 new tokens/s" in note  # 256 tokens in 1.1 s


def test_targets_over_several_runs(tmp_path, capsys):
    anchor = "attndsl portable/auto"
    case = Case("causal", 4096)
    runs = []
    for export in (2.2, 2.1, 1.9):  # the 2.0 target holds in 2 of 3 runs
        report = _report({case: {anchor: [1.0] * 3, "export": [export] * 3,
                                 "sdpa": [1.0] * 3}})
        runs.append(report)
    rows = {r[1]: r for r in runs_rows(runs, issue=11)}
    row = rows["causal S=4096: t(torch.onnx.export + ORT) / t(attndsl)"]
    assert row[3] == "2.20, 2.10, 1.90" and row[4] == "2 of 3 runs"
    assert rows["causal S=4096: t(attndsl) / t(PyTorch SDPA is_causal)"][4] == "3 of 3 runs"
    decode = rows["decode GQA 32/8 D=128 past 4096 B=1: t(attndsl) / t(ORT GroupQueryAttention)"]
    assert decode[4] == "not measured"
    files = []
    for i, report in enumerate(runs):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(report.as_json(_env())))
        files.append(str(path))
    assert report_main([*files, "--issue", "11", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| 11 | causal S=4096: t(torch.onnx.export + ORT) / t(attndsl) | >= 2 | " \
        "2.20, 2.10, 1.90 | 2 of 3 runs |" in out
    assert report_main([files[2], "--issue", "11"]) == 0  # one run: met / missed
    assert "missed (1.05× short)" in capsys.readouterr().out


# ------------------------------------------------------------------ the regression check
def _env() -> dict:
    return {"date": "2026-01-01 00:00", "onnxruntime": "x", "torch": "x", "attndsl": "x",
            "threads": 2, "cores": 2, "load_avg_start": 0.0, "load_avg_end": 0.0, "wall_s": 1.0}


def _results(cases: dict[Case, dict[str, float]]) -> dict:
    """A results JSON (as ``run.py`` writes it) with made-up per-round times: every runner
    takes the given time in each of 3 rounds."""
    return _report({c: {n: [t] * 3 for n, t in series.items()}
                    for c, series in cases.items()}).as_json(_env())


def _verdicts(baseline: dict, now: dict, threshold: float = 0.15) -> dict:
    return {(c.case, c.peer): c for c in compare(Report.from_json(json.loads(json.dumps(baseline))),
                                                 Report.from_json(json.loads(json.dumps(now))),
                                                 threshold)}


def test_check_flags_ratios_worse_than_the_threshold():
    anchor = "attndsl portable/auto"
    causal, dense, sliding = Case("causal", 4096), Case("dense", 1024), Case("sliding", 4096)
    baseline = _results({
        causal: {anchor: 1.0, "export": 2.0, "sdpa": 1.0, "ort-gqa": 1.0, "ort-mha": 2.0},
        dense: {anchor: 1.0, "ort-mha": 1.0}})
    # absolute times doubled (another machine): only the ratios count
    now = _results({
        causal: {anchor: 2.0, "export": 4.0 / 1.14, "sdpa": 2.0 / 1.16, "ort-gqa": 3.0,
                 "ort-mha": 4.0},
        sliding: {anchor: 1.0, "flex": 1.3}})
    got = _verdicts(baseline, now)
    assert got[("causal-4096", "ort-mha")].verdict == "ok"  # equal
    assert got[("causal-4096", "ort-mha")].worse_by == pytest.approx(0.0)
    assert got[("causal-4096", "export")].verdict == "ok"  # 14% worse
    assert got[("causal-4096", "export")].worse_by == pytest.approx(0.14)
    assert got[("causal-4096", "sdpa")].verdict == "REGRESSED"  # 16% worse
    assert got[("causal-4096", "sdpa")].worse_by == pytest.approx(0.16)
    assert got[("causal-4096", "ort-gqa")].verdict == "improved"  # 3x better
    assert got[("dense-1024", "ort-mha")].verdict == "missing"  # case not run now
    assert got[("sliding256-4096", "flex")].verdict == "new"  # case not in the baseline
    assert got[("sliding256-4096", "flex")].baseline is None
    assert not got[("dense-1024", "ort-mha")].failed and got[("causal-4096", "sdpa")].failed
    assert _verdicts(baseline, now, threshold=0.2)[("causal-4096", "sdpa")].verdict == "ok"
    rows, text = check_files(baseline, now)
    assert "1 of 6 ratios regressed or failed" in text
    assert "16.0% worse" in text and "REGRESSED" in text


def test_check_reports_a_variant_that_failed_now():
    anchor = "attndsl portable/auto"
    case = Case("decode", 64, heads=4, kv_heads=2, head_dim=16)
    baseline = _results({case: {anchor: 1.0, "ort-gqa": 1.0}})
    now = _results({case: {"ort-gqa": 1.0}})
    now["cases"][case.name]["status"][anchor] = {"error": "compile failed: boom"}
    got = _verdicts(baseline, now)
    assert got[(case.name, "ort-gqa")].verdict == "FAILED"


def test_check_cli_exit_codes(tmp_path):
    anchor = "attndsl portable/auto"
    case = Case("causal", 4096)
    base, good, bad = (tmp_path / f"{n}.json" for n in ("base", "good", "bad"))
    base.write_text(json.dumps(_results({case: {anchor: 1.0, "sdpa": 1.0}})))
    good.write_text(json.dumps(_results({case: {anchor: 3.0, "sdpa": 3.3}})))
    bad.write_text(json.dumps(_results({case: {anchor: 1.0, "sdpa": 0.8}})))
    from benchmarks.run import main as run_main

    assert run_main(["--check", str(base), "--against", str(good)]) == 0
    assert run_main(["--check", str(base), "--against", str(bad)]) == 1  # 25% worse
    assert run_main(["--check", str(base), "--against", str(bad), "--threshold", "30"]) == 0


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
