"""The README stays true: its commands exist, CI runs its test command verbatim, its examples
and error sample match what the tools do."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from attndsl import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _sh_blocks(text: str = README) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command():
    test_block = README.split("## Running the tests", 1)[1]
    command = _sh_blocks(test_block)[0].strip()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    assert "set -euo pipefail" in ci_lines
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()


def test_readme_commands_parse_and_name_existing_files():
    parser = cli.build_parser()
    for block in _sh_blocks():
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if "attndsl " not in line:
                continue
            argv = line.split("attndsl ", 1)[1].split()
            args = parser.parse_args(argv)
            for name in ("spec", "model", "src"):
                path = getattr(args, name, None)
                if path and path.startswith("examples/"):
                    assert (ROOT / path).exists(), path


@pytest.mark.parametrize("command", ["compile", "check", "run", "ir", "convert", "viz",
                                     "import-hf"])
def test_readme_lists_every_command(command):
    assert f"`attndsl {command} " in README


def test_readme_examples_exist():
    for name in re.findall(r"^\| `(\w+)` \|", README.split("## Examples", 1)[1].split("##")[0],
                           re.M):
        assert (ROOT / "examples" / f"{name}.yaml").exists(), name
        assert (ROOT / "examples" / f"{name}.attn").exists(), name


# ---------------------------------------------------------------- the Python section


def _python_blocks() -> list[str]:
    section = README.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _shown_outputs(block: str) -> list[str]:
    """The comment runs right after a ``print(...)`` line: what the README says it prints."""
    shown, lines = [], block.splitlines()
    for i, line in enumerate(lines):
        if "print(" not in line:
            continue
        run = []
        for after in lines[i + 1:]:
            if not after.strip().startswith("# "):
                break
            run.append(after.strip()[2:])
        if run:
            shown.append(" ".join(run))
    return shown


def _words(text: str) -> str:
    return " ".join(text.split())


def test_readme_python_section_runs(tmp_path, monkeypatch, capsys):
    """Every python block of the "Python" section runs, in order, in one namespace, from a
    folder that has the examples (as the repository root has); what the comments say a print
    shows is what it prints."""
    blocks = _python_blocks()
    assert len(blocks) >= 3
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        printed = _words(capsys.readouterr().out)
        for shown in _shown_outputs(block):
            assert _words(shown) in printed, (i, shown)
    assert (tmp_path / "tiny.attn").exists() and (tmp_path / "mistral16.onnx").exists()


def test_readme_python_section_shows_every_api_function():
    code = "\n".join(_python_blocks())
    for name in ("Spec.load", "with_block", "attndsl.compile(", "attndsl.compile_to(",
                 "attndsl.run(", "attndsl.verify(", "attndsl.check(", "attndsl.decode(",
                 "Spec.new(", "to_attn()", ".save("):
        assert name in code, name
