"""``dead-outputs``: blocks whose output no graph output needs are dropped, with their
weights. A block is needed when a spec output names it (its stream or its ``.weights``),
when it has a cache (its present key/value are graph outputs), or when a needed block reads
it. Graph inputs and outputs never change: an input only dropped blocks read stays an
input."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .base import IRPass, PassResult, Program


@dataclass(frozen=True)
class DeadOutputsOptions:
    keep: tuple[str, ...] = ()  # blocks kept even when nothing needs them


class DeadOutputs(IRPass):
    name = "dead-outputs"
    Options = DeadOutputsOptions

    def run(self, program: Program) -> PassResult[Program]:
        model = program.model
        live = {o.stream for o in model.outputs} | set(self.options.keep)
        live |= {b.name for b in model.blocks if b.cache}
        for b in reversed(model.blocks):
            if b.name in live:
                live |= {b.query, b.key, b.value}
        blocks = tuple(b for b in model.blocks if b.name in live)
        if len(blocks) == len(model.blocks):
            return PassResult(program, False)
        model = replace(model, blocks=blocks)
        weights = {n: program.weights[n] for n in model.weight_shapes()}
        return PassResult(Program(model, weights), True)
