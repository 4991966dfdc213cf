"""The IR passes by name and the pass manager.

The manager cycles through a stage's passes until a whole round changes nothing (at most
``max_rounds`` rounds); it serves both stages (graph passes too, ``lower.pipeline``). Pipelines
of pass names that mix both stages, the default pipeline and ``stop_after`` (``attndsl ir SPEC
--after PASS``) are resolved in ``lower.pipeline``, which knows the graph passes as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import IRPass, Pass, PassResult, Program
from .canonicalize_masks import CanonicalizeMasks
from .dead_outputs import DeadOutputs
from .fold_scale import FoldScale
from .fuse_qkv import FuseQKV

IR_PASSES: dict[str, type[IRPass]] = {p.name: p for p in (
    CanonicalizeMasks, FoldScale, FuseQKV, DeadOutputs)}


class PassManager:
    """Runs passes of one stage until a whole round changes nothing (bounded)."""

    def __init__(self, passes: Sequence[Pass], max_rounds: int = 4):
        self.passes = list(passes)
        self.max_rounds = max_rounds

    def run(self, program: Any) -> PassResult[Any]:
        """Cycle through the passes; stop once every pass has run, unchanged, on the current
        program (so a pass is not rerun when nothing changed since its last run)."""
        changed_any = False
        unchanged_in_a_row = 0
        n = len(self.passes)
        for step in range(n * self.max_rounds):
            result = self.passes[step % n].run(program)
            program = result.program
            unchanged_in_a_row = 0 if result.changed else unchanged_in_a_row + 1
            changed_any |= result.changed
            if unchanged_in_a_row >= n:
                break
        return PassResult(program, changed_any)


def run_ir_passes(program: Program, passes: Sequence[IRPass]) -> Program:
    """``program`` after the pass manager ran ``passes`` on it (as it is when there are
    none)."""
    return PassManager(passes).run(program).program if passes else program
