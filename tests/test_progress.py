"""The progress bar of long compiles (``lower.progress``): drawn on a terminal once the work
takes longer than its delay, counting blocks lowered and bytes written, erased at the end;
silent when the stream is not a terminal or the work is quick."""

from __future__ import annotations

import io
from pathlib import Path

from attndsl import parse_spec
from attndsl.lower.compile import compile_to_file
from attndsl.lower.progress import Progress

SPEC = """\
attndsl: 1
name: three
dims: {batch: dynamic, seq: dynamic, d_model: 32}
inputs:
  x: [batch, seq, d_model]
blocks:
  a: {query: x, heads: 4, mask: causal}
  b: {query: a, heads: 4, mask: causal}
  c: {query: b, heads: 4, mask: causal}
outputs:
  y: c
"""


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal(tmp_path: Path) -> None:
    tty = FakeTTY()
    progress = Progress(stream=tty, delay=0.0, interval=0.0)
    saved, _ = compile_to_file(parse_spec(SPEC), tmp_path / "m.onnx", external="always",
                               progress=progress)
    text = tty.getvalue()
    frames = text.split("\r")
    assert any("lowering" in f and "3/3 blocks" in f for f in frames)
    assert any("lowering" in f and "1/3 blocks" in f for f in frames)
    assert any("writing weights" in f and "[" + "#" * progress.width + "]" in f
               for f in frames)
    assert "\n" not in text  # one line, redrawn in place
    assert text.endswith("\r") and frames[-2].strip() == ""  # erased at the end
    assert progress.done == saved.data_bytes


def test_inline_save_counts_bytes(tmp_path: Path) -> None:
    tty = FakeTTY()
    progress = Progress(stream=tty, delay=0.0, interval=0.0)
    saved, _ = compile_to_file(parse_spec(SPEC), tmp_path / "m.onnx", progress=progress)
    assert any("writing model" in f for f in tty.getvalue().split("\r"))
    assert progress.done == saved.model_bytes


def test_silent_when_not_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()  # isatty() is False
    compile_to_file(parse_spec(SPEC), tmp_path / "m.onnx",
                    progress=Progress(stream=stream, delay=0.0, interval=0.0))
    assert stream.getvalue() == ""


def test_silent_for_quick_work(tmp_path: Path) -> None:
    """Nothing is drawn before the delay has passed (a fake clock that never moves)."""
    tty = FakeTTY()
    compile_to_file(parse_spec(SPEC), tmp_path / "m.onnx",
                    progress=Progress(stream=tty, delay=2.0, clock=lambda: 0.0))
    assert tty.getvalue() == ""


def test_line_format() -> None:
    times = iter([0.0, 5.0, 5.0, 5.0])
    progress = Progress(stream=FakeTTY(), delay=0.0, clock=lambda: next(times))
    progress.phase("writing weights", 3_000_000_000, "bytes")
    progress.done = 1_500_000_000
    assert progress.line() == ("attndsl: writing weights [" + "#" * 14 + "." * 14
                               + "] 1.5 GB / 3.0 GB  5 s")


def test_cli_prints_no_bar_to_a_pipe(tmp_path: Path) -> None:
    import subprocess
    import sys

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    r = subprocess.run([sys.executable, "-m", "attndsl", "compile", str(spec), "-o",
                        str(tmp_path / "m.onnx")], capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and r.stderr == ""
