"""RoPE's constant table (a block feature; the reference and the lowerings share it)."""

from __future__ import annotations

import numpy as np


def rope_inv_freq(dim: int, theta: float) -> np.ndarray:
    """``1 / theta ** (2i / dim)`` for i < dim / 2 (Hugging Face / Llama)."""
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
