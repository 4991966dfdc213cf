"""Resource limits: a spec with a huge number is refused before any array is made, with a
message naming the number; the limits can be raised."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attndsl import api, limits
from attndsl.cli import main
from attndsl.limits import LimitError

ROOT = Path(__file__).resolve().parent.parent
GPT2 = (ROOT / "examples" / "gpt2_causal.yaml").read_text(encoding="utf-8")
BIGBIRD = (ROOT / "specs" / "bigbird.attn").read_text(encoding="utf-8")
T5 = (ROOT / "specs" / "t5_relative.yaml").read_text(encoding="utf-8")

# (file name, spec text, what the message must say, the line of the number)
TYPOS = [
    ("d_model.yaml", GPT2.replace("d_model: 192", "d_model: 1000000").replace(
        "heads: 12", "heads: 10"), "d_model: 1000000 gives attn.q_proj.weight 1000000 x "
     "1000000 = 3.6 TiB", 8),
    ("heads.yaml", GPT2.replace("heads: 12", "heads: 1000000\n    head_dim: 16"),
     "heads: 1000000 gives attn.q_proj.weight 16000000 x 192", 14),
    ("head_dim.yaml", GPT2.replace("heads: 12", "heads: 12\n    head_dim: 1000000"),
     "head_dim: 1000000 gives attn.q_proj.weight 12000000 x 192", 15),
    ("random.attn", BIGBIRD.replace("seq = 64", "seq = 10000000"),
     "seq: 10000000 gives block 'attn': the 10000000 x 10000000 cell table of random(...)", 5),
    ("global.attn", BIGBIRD.replace("seq = 64", "seq = 10000000").replace(
        " | random(2, block = 16, seed = 7)", ""),
     "seq: 10000000 gives block 'attn': the compile-time mask analysis of static lengths "
     "over 10000000 x 10000000", 5),
    ("buckets.yaml", T5.replace("buckets=32, max_distance=128",
                                "buckets=100000000, max_distance=1000000000"),
     "the bucket table of relative_bias(...)", 16),
    ("global_pos.attn", BIGBIRD.replace("global(0)", "global(0, 2000000000)"),
     "global: 2000000000 gives block 'attn': the lookup table of global(...)", 10),
]


@pytest.mark.parametrize("name,text,message,line", TYPOS, ids=[t[0] for t in TYPOS])
def test_typo_refused_with_the_number(tmp_path, capsys, name, text, message, line):
    spec = tmp_path / name
    spec.write_text(text, encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    code = main(["compile", str(spec), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    # 1.6 s on an idle machine, imports of a first call included; a loaded CI box is slower
    assert time.monotonic() - t0 < 10.0
    assert code == 2, err
    assert message in err and f"{spec}:{line}:" in err, err
    assert "over the limit" in err and "docs/limits.md" in err
    assert not (tmp_path / "out.onnx").exists()
    # nothing big was made (peak RSS grows by less than 64 MiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_check_and_run_refuse_too(tmp_path, capsys):
    spec = tmp_path / "d.yaml"
    spec.write_text(TYPOS[0][1], encoding="utf-8")
    for argv in (["check", str(spec)], ["run", str(spec)], ["ir", str(spec), "--after",
                                                              "fold_scale"]):
        assert main(argv) == 2, argv
        assert "d_model: 1000000 gives" in capsys.readouterr().err


def test_the_cli_on_typos_is_quick_and_small(tmp_path):
    """The command itself: exit 2 within seconds of its start (after the imports), peak
    RSS small (64 MB measured)."""
    spec = tmp_path / "h.yaml"
    spec.write_text(TYPOS[1][1], encoding="utf-8")
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking (pytest) process
    code = ("import re, sys, time; import attndsl.cli as c; t = time.monotonic(); "
            "r = c.main(sys.argv[1:]); hwm = re.search(r'VmHWM:\\s*(\\d+)', "
            "open('/proc/self/status').read()).group(1); "
            "print(time.monotonic() - t, hwm); sys.exit(r)")
    p = subprocess.run([sys.executable, "-c", code, "compile", str(spec), "-o",
                        str(tmp_path / "o.onnx")], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "heads: 1000000 gives" in p.stderr
    seconds, peak_kib = p.stdout.split()
    assert float(seconds) < 10.0 and int(peak_kib) < 400 * 1024


def test_limits_can_be_raised(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "g.yaml"
    spec.write_text(GPT2, encoding="utf-8")  # 148,224 parameters = 0.57 MiB
    monkeypatch.setenv("ATTNDSL_MAX_WEIGHTS_GIB", "0.0001")  # 0.1 MiB
    assert main(["compile", str(spec), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "attn.q_proj.weight 192 x 192" in capsys.readouterr().err
    # the flag wins over the environment
    assert main(["compile", str(spec), "-o", str(tmp_path / "o.onnx"),
                 "--max-weights-gib", "0.01"]) == 0
    monkeypatch.setenv("ATTNDSL_MAX_WEIGHTS_GIB", "1")
    monkeypatch.setenv("ATTNDSL_MAX_CONSTANT_MIB", "1")
    big = BIGBIRD.replace("global(0)", "global(0, 2000000)")  # a 2 MB table
    (tmp_path / "b.attn").write_text(big, encoding="utf-8")
    assert main(["compile", str(tmp_path / "b.attn"), "-o", str(tmp_path / "b.onnx")]) == 2
    assert "lookup table of global(...)" in capsys.readouterr().err
    monkeypatch.setenv("ATTNDSL_MAX_CONSTANT_MIB", "4")
    assert main(["compile", str(tmp_path / "b.attn"), "-o", str(tmp_path / "b.onnx")]) == 0


def test_analysis_limit_and_check_sizes(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "g.yaml"
    spec.write_text(GPT2, encoding="utf-8")
    assert main(["check", str(spec), "--len", "2000000"]) == 2  # 4e12 cells
    err = capsys.readouterr().err
    assert "mask density and tile counts over 2000000 x 2000000" in err
    monkeypatch.setenv("ATTNDSL_MAX_ANALYSIS_CELLS", "100")
    assert main(["check", str(spec), "--len", "11"]) == 2
    assert main(["check", str(spec), "--len", "10"]) == 0


def test_viz_length_bounded(tmp_path, capsys):
    """Regression: 'viz --len 100000' built a [heads, q, k] grid of 1.2e11 cells for
    minutes."""
    spec = tmp_path / "g.yaml"
    spec.write_text(GPT2, encoding="utf-8")
    assert main(["viz", str(spec), "--len", "100000"]) == 2
    err = capsys.readouterr().err
    assert "the picture of the mask over 12 heads x 100000 x 100000" in err


def test_run_sizes_bounded(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(GPT2, encoding="utf-8")
    assert main(["run", str(spec), "--sizes", "seq=1000000"]) == 2
    err = capsys.readouterr().err
    assert "a run at these sizes needs about" in err and "ATTNDSL_MAX_RUN_GIB" in err


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", ""])
def test_bad_limit_values(monkeypatch, capsys, tmp_path, value):
    spec = tmp_path / "g.yaml"
    spec.write_text(GPT2, encoding="utf-8")
    if value:
        assert main(["compile", str(spec), "-o", str(tmp_path / "o.onnx"),
                     "--max-weights-gib", value]) == 2
    monkeypatch.setenv("ATTNDSL_MAX_CONSTANT_MIB", value)
    code = main(["compile", str(spec), "-o", str(tmp_path / "o.onnx")])
    if value:
        assert code == 2 and "ATTNDSL_MAX_CONSTANT_MIB must be a positive number" in (
            capsys.readouterr().err)
    else:  # empty: the default
        assert code == 0


def test_python_api_override():
    model = api.parse_spec(TYPOS[0][1].replace("1000000", "1920"), "m.yaml")
    with limits.override(max_weights_gib=1e-5), pytest.raises(LimitError) as err:
        api.compile(model)
    assert "d_model: 1920 gives" in str(err.value)
    assert limits.current().max_weights_bytes > 1 << 28  # restored


def test_default_weights_limit_fits_the_machine():
    import os

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    got = limits.default_weights_bytes()
    assert got <= 16 << 30 and got <= max(memory // limits.WEIGHT_COPIES, 1 << 28)


def test_random_block_larger_than_the_sequence(tmp_path, capsys):
    """Regression (fuzzer mutant 7541 of seed 1): random(2, block=100000000) at seq 64 made
    a block x block array (8.9 PiB) before cutting it to 64 x 64."""
    spec = tmp_path / "r.attn"
    spec.write_text(BIGBIRD.replace("block = 16", "block = 100000000"), encoding="utf-8")
    assert main(["run", str(spec), "--verify"]) == 0, capsys.readouterr().err
