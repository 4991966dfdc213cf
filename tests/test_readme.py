"""The README stays true: its commands exist, CI runs its test command verbatim, its examples
and error sample match what the tools do."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize("command", ["compile", "check", "run", "ir", "convert", "viz"])
def test_readme_lists_every_command(command):
    assert f"`attndsl {command} " in README


def test_readme_examples_exist():
    for name in re.findall(r"^\| `(\w+)` \|", README.split("## Examples", 1)[1].split("##")[0],
                           re.M):
        assert (ROOT / "examples" / f"{name}.yaml").exists(), name
        assert (ROOT / "examples" / f"{name}.attn").exists(), name
