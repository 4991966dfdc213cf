"""``fold-scale``: the logit scale moved into the query projection.

``s = scale * (q . k)`` and q is linear in the query projection's weight and bias, and RoPE
rotates q linearly, so scaling the query rows of the weight (and the bias) by ``scale`` and
setting the block's scale to 1.0 gives the same logits without the per-step multiply. Only
blocks with projections (core mode has no weight to fold into), and only when every block
feature lists this pass (QK-norm, for one, undoes a scaled projection)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..arrays import derived
from ..features.registry import pass_allowed
from .base import IRPass, PassResult, Program


@dataclass(frozen=True)
class FoldScaleOptions:
    # fold only scales that are powers of two, so the folded weights are exactly the scaled
    # ones in every dtype (float16 models round weights once more otherwise)
    exact_only: bool = False


class FoldScale(IRPass):
    name = "fold-scale"
    Options = FoldScaleOptions

    def foldable(self, scale: float) -> bool:
        if scale == 1.0:
            return False
        return not self.options.exact_only or math.frexp(scale)[0] == 0.5

    def run(self, program: Program) -> PassResult[Program]:
        weights = dict(program.weights)
        blocks = []
        for b in program.model.blocks:
            if not (b.project and self.foldable(b.scale) and pass_allowed(self.name, b.features)):
                blocks.append(b)
                continue
            proj = f"{b.name}.{'qkv' if b.fused_qkv else 'q'}_proj"
            rows = b.heads * b.head_dim  # the query rows (first in a fused weight)
            bias = b.has_bias("qkv" if b.fused_qkv else "q")
            names = [f"{proj}.weight"] + ([f"{proj}.bias"] if bias else [])
            for name in names:  # scaled when written (arrays.py): no second copy held
                src = weights[name]
                weights[name] = derived(
                    src, np.float16 if src.dtype == np.float16 else np.float32,
                    lambda a, rows=rows, scale=b.scale: _scaled_rows(a, rows, scale),
                    f"{name} (fold-scale x{b.scale:g})")
            blocks.append(replace(b, scale=1.0))
        if all(new is old for new, old in zip(blocks, program.model.blocks, strict=True)):
            return PassResult(program, False)
        return PassResult(Program(replace(program.model, blocks=tuple(blocks)), weights), True)


#: Elements scaled per step in float64: bounds the pass's scratch memory.
_CHUNK_ELEMENTS = 1 << 20


def _scaled_rows(arr: np.ndarray, rows: int, scale: float) -> np.ndarray:
    """A copy of ``arr`` with its first ``rows`` rows times ``scale``, each product taken
    in float64 and rounded once to the result's dtype: float16 stays float16 (a float16
    checkpoint never gets a float32 copy), anything else becomes float32. Row chunks bound
    the float64 scratch to ``_CHUNK_ELEMENTS``."""
    dtype = np.float16 if arr.dtype == np.float16 else np.float32
    out = np.array(arr, dtype=dtype)
    row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)))
    step = max(1, _CHUNK_ELEMENTS // row)
    for i in range(0, rows, step):
        part = arr[i:min(rows, i + step)]
        out[i:i + len(part)] = np.asarray(part, dtype=np.float64) * scale
    return out
