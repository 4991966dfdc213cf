"""``fuse-qkv``: the q, k and v projections of a block that reads one stream (self-attention
with projections) become one Linear, ``<block>.qkv_proj``, whose rows are the q rows, then
the k rows, then the v rows. The lowering emits one MatMul (and one Add) and a Split instead
of three of each. With biases on only some of q, k, v (the ``bias`` feature) the fused bias
holds zeros for the rows of the others, which adds nothing."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..arrays import concatenate
from ..features.registry import pass_allowed
from .base import IRPass, PassResult, Program


@dataclass(frozen=True)
class FuseQKVOptions:
    blocks: tuple[str, ...] = ()  # fuse only these blocks (empty: every block that can be)


class FuseQKV(IRPass):
    name = "fuse-qkv"
    Options = FuseQKVOptions

    def run(self, program: Program) -> PassResult[Program]:
        wanted = set(self.options.blocks)
        weights = dict(program.weights)
        blocks = []
        for b in program.model.blocks:
            one_stream = b.query == b.key == b.value
            if (not b.project or b.fused_qkv or not one_stream
                    or (wanted and b.name not in wanted)
                    or not pass_allowed(self.name, b.features)):
                blocks.append(b)
                continue
            names = [f"{b.name}.{p}_proj.weight" for p in "qkv"]
            rows = [weights[n].shape[0] for n in names]
            # stacked when written (arrays.py): never the unfused and fused arrays at once
            weights[f"{b.name}.qkv_proj.weight"] = concatenate(
                [weights.pop(n) for n in names], f"{b.name}.qkv_proj.weight (fuse-qkv)")
            if b.has_bias("qkv"):  # a projection without a bias adds zeros (exact)
                dtype = weights[f"{b.name}.qkv_proj.weight"].dtype
                weights[f"{b.name}.qkv_proj.bias"] = concatenate(
                    [weights.pop(f"{b.name}.{p}_proj.bias") if b.has_bias(p)
                     else np.zeros(n, dtype)
                     for p, n in zip("qkv", rows, strict=True)],
                    f"{b.name}.qkv_proj.bias (fuse-qkv)")
            blocks.append(replace(b, fused_qkv=True))
        if all(new is old for new, old in zip(blocks, program.model.blocks, strict=True)):
            return PassResult(program, False)
        model = replace(program.model, blocks=tuple(blocks))
        shapes = model.weight_shapes()  # keep the layout's order (initializer order)
        return PassResult(Program(model, {n: weights[n] for n in shapes}), True)
