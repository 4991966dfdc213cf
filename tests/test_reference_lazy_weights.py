"""``run --verify`` memory: the reference reads the weights block by block (a lazy mapping
stays lazy, one block's float64 copies at a time) and gives the same outputs as with every
array at hand."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator, Mapping

import numpy as np

from attndsl import parse_spec
from attndsl.reference import run_reference
from attndsl.weights import seeded_weights

_BLOCKS = 8


def _spec(blocks: int = _BLOCKS, d: int = 256) -> str:
    lines = ["attndsl: 1", "name: chain", f"dims: {{batch: 1, seq: 4, d_model: {d}}}",
             "inputs:", "  x: [batch, seq, d_model]", "blocks:"]
    for i in range(blocks):
        q = "x" if i == 0 else f"b{i - 1}"
        lines.append(f"  b{i}: {{query: {q}, heads: 4, kv_heads: 2, mask: causal}}")
    lines += ["outputs:", f"  y: b{blocks - 1}"]
    return "\n".join(lines) + "\n"


class _Made(Mapping[str, np.ndarray]):
    """Each weight made when read (as the verifier decodes initializers), names logged."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.shapes = {k: (v.shape, v.dtype) for k, v in arrays.items()}
        self.seed = {k: i for i, k in enumerate(sorted(arrays))}
        self.reads: list[str] = []

    def __getitem__(self, name: str) -> np.ndarray:
        self.reads.append(name)
        shape, dtype = self.shapes[name]
        return np.random.default_rng(self.seed[name]).standard_normal(shape).astype(dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def test_reference_reads_weights_block_by_block() -> None:
    model = parse_spec(_spec(), "chain.yaml")
    lazy = _Made(seeded_weights(model))
    x = {"x": np.random.default_rng(0).standard_normal((1, 4, 256)).astype(np.float32)}
    everything = {k: lazy[k] for k in lazy}
    lazy.reads.clear()
    want = run_reference(model, everything, x)

    all64 = sum(8 * int(np.prod(s)) for s, _ in lazy.shapes.values())
    tracemalloc.start()
    try:
        got = run_reference(model, lazy, x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # Blocks read their own weights, in block order.
    blocks = [name.split(".")[0] for name in lazy.reads]
    assert blocks == sorted(blocks, key=lambda b: int(b[1:]))
    assert set(lazy.reads) == set(lazy.shapes)
    # One block's float64 weights (1/8 of them) plus its float32 source and activations; all
    # of them at once would be ``all64``.
    assert peak < 0.5 * all64, (peak, all64)
