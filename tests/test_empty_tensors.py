"""Empty tensors (batch 0, no keys, no queries) run in every lowering and match the
reference: reshapes use explicit shapes, never -1 on a tensor with no elements."""

from __future__ import annotations

import numpy as np
import pytest

import attndsl
from attndsl.lower.compile import CompileOptions, compile_model
from attndsl.reference import run_reference
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights

CROSS = """attndsl: 1
dims: {batch: dynamic, sq: dynamic, sk: dynamic}
inputs: {x: [batch, sq, 8], mem: [batch, sk, 8]}
blocks: {attn: {query: x, key_value: mem, heads: 4, kv_heads: 2}}
outputs: {y: attn}
"""

SELF = """attndsl: 1
dims: {{batch: dynamic, seq: dynamic}}
inputs: {{x: [batch, seq, 8]}}
blocks: {{attn: {{query: x, heads: 2, kv_heads: 1, mask: "{mask}"}}}}
outputs: {{y: attn}}
"""


def _check(model, options, feeds):
    got = run_session(make_session(compile_model(model, options=options)), feeds)["y"]
    want = run_reference(model, load_weights(model), feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("x_shape, mem_shape", [((1, 3, 8), (1, 0, 8)), ((0, 3, 8), (0, 2, 8)),
                                                ((2, 0, 8), (2, 4, 8))])
def test_gqa_cross_attention_with_empty_tensors(x_shape, mem_shape):
    model = attndsl.parse_spec(CROSS, "x.yaml")
    feeds = {"x": np.ones(x_shape, np.float32), "mem": np.ones(mem_shape, np.float32)}
    _check(model, CompileOptions(sparse="dense"), feeds)


@pytest.mark.parametrize("mask", ["causal & sliding(2)", "causal"])
@pytest.mark.parametrize("shape", [(0, 3, 8), (1, 0, 8), (2, 5, 8)])
def test_block_sparse_with_empty_tensors(mask, shape):
    model = attndsl.parse_spec(SELF.format(mask=mask), "x.yaml")
    feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    _check(model, CompileOptions(sparse="block", block_size=2), feeds)
