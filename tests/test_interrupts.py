"""Ctrl-C during compile or run leaves no partial or temporary file and exits 130 without a
traceback; two processes compiling to one path leave one complete model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from attndsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
# a model that takes a moment to compile (about 12M parameters)
SPEC = (ROOT / "examples" / "gpt2_causal.yaml").read_text(encoding="utf-8").replace(
    "d_model: 192", "d_model: 1536")


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_interrupt_while_writing_the_model(tmp_path, capsys, monkeypatch, where):
    """KeyboardInterrupt at three moments of the atomic write (``fileio``): the old model
    stays as it was, no temporary file is left, the CLI says 'interrupted' and exits 130."""
    spec = tmp_path / "g.yaml"
    spec.write_text((ROOT / "examples" / "gpt2_causal.yaml").read_text(), encoding="utf-8")
    out = tmp_path / "g.onnx"
    out.write_bytes(b"old model")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "write":  # the temporary file gets some bytes, then Ctrl-C
        real = os.fdopen

        class Interrupted:
            def __init__(self, f):
                self.f = f

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.f.__exit__(*exc)

            def write(self, data):
                self.f.write(data[:100])
                raise KeyboardInterrupt

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: Interrupted(real(*a, **k)))
    else:
        monkeypatch.setattr(os, where, interrupt)
    code = main(["compile", str(spec), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == "interrupted"
    assert out.read_bytes() == b"old model"
    assert _leftovers(tmp_path, {"g.yaml", "g.onnx"}) == []


def test_interrupt_while_the_parser_is_built(monkeypatch, capsys):
    """Regression: build_parser ran outside main's try, so a Ctrl-C there gave a
    traceback."""
    import attndsl.cli as cli

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupt)
    assert cli.main(["--version"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_interrupt_while_saving_outputs(tmp_path, capsys, monkeypatch):
    spec = tmp_path / "g.yaml"
    spec.write_text((ROOT / "examples" / "gpt2_causal.yaml").read_text(), encoding="utf-8")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    code = main(["run", str(spec), "--output", str(tmp_path / "o.npz")])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert _leftovers(tmp_path, {"g.yaml"}) == []


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    """The CLI in a child that says 'ready' once its imports are done (so that SIGINT lands
    in the command, not in the interpreter's start-up)."""
    code = ("import sys; import attndsl.cli as c; import attndsl.lower.compile; "
            "import attndsl.runtime; print('ready', flush=True); sys.exit(c.main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("command", ["compile", "run"])
def test_sigint_at_various_moments(tmp_path, command):
    """SIGINT sent 0 .. 2.5 s into the command (after its imports): each ends with 0 (done
    before the signal) or 130 and 'interrupted', no traceback, no temporary file; a model
    written is valid."""
    spec = tmp_path / "g.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    out = tmp_path / ("g.onnx" if command == "compile" else "o.npz")
    seen = set()
    for delay in (0.0, 0.3, 1.0, 2.5) if command == "compile" else (0.0, 1.0):
        out.unlink(missing_ok=True)
        argv = (["compile", str(spec), "-o", str(out)] if command == "compile"
                else ["run", str(spec), "--sizes", "seq=64", "--output", str(out)])
        p = _start(argv, tmp_path)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=300)
        seen.add(p.returncode)
        # -SIGINT: the command had finished (its last line printed) and the signal landed
        # while the interpreter shut down, where Python no longer turns it into an exception
        done = "wrote " in stdout
        assert p.returncode in (0, 130) or (p.returncode == -signal.SIGINT and done), (
            delay, p.returncode, stdout, stderr)
        assert "Traceback" not in stderr, stderr
        if p.returncode == 130:
            assert stderr.strip().endswith("interrupted")
        # no partial file: none, or (the signal came after the rename) a complete one
        if out.exists() and command == "compile":
            onnx.checker.check_model(onnx.load(out))
        assert _leftovers(tmp_path, {"g.yaml", out.name}) == [], delay
    assert 130 in seen


def test_two_compiles_to_one_path(tmp_path):
    """Two processes compile different specs to one output at once: one complete model is
    left (one of the two), and no temporary file."""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(SPEC, encoding="utf-8")
    b.write_text(SPEC.replace("heads: 12", "heads: 16"), encoding="utf-8")
    out = tmp_path / "m.onnx"
    for _ in range(1):
        procs = [_start(["compile", str(s), "-o", str(out)], tmp_path) for s in (a, b)]
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        model = onnx.load(out)
        onnx.checker.check_model(model)
        spec = next(p.value for p in model.metadata_props if p.key == "attndsl.spec")
        assert spec in (a.read_text(), b.read_text())
        assert _leftovers(tmp_path, {"a.yaml", "b.yaml", "m.onnx"}) == []
