"""``canonicalize-masks``: each block's mask in the canonical simplified form of the mask
algebra (``masks.algebra.simplify``), knowing the block's head count, so redundant terms
(``causal & sliding(16)``), constant parts (``heads(0, 1)`` of two heads) and spellings that
differ only in order lower to the same, smaller graph."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..masks.algebra import simplify
from .base import IRPass, PassResult, Program


@dataclass(frozen=True)
class CanonicalizeMasksOptions:
    use_heads: bool = True  # let rules use the block's head count (heads(...) folding)


class CanonicalizeMasks(IRPass):
    name = "canonicalize-masks"
    Options = CanonicalizeMasksOptions

    def run(self, program: Program) -> PassResult[Program]:
        blocks = []
        for b in program.model.blocks:
            mask = simplify(b.mask, b.heads if self.options.use_heads else None)
            blocks.append(b if mask == b.mask else replace(b, mask=mask))
        changed = any(new is not old for new, old in zip(blocks, program.model.blocks,
                                                         strict=True))
        if not changed:
            return PassResult(program, False)
        return PassResult(program.with_(replace(program.model, blocks=tuple(blocks))), True)
