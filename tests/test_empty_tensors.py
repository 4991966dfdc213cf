"""Empty tensors (batch 0, no keys, no queries) run in every lowering and match the
reference: reshapes use explicit shapes, never -1 on a tensor with no elements."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_against_reference, one_block

import attndsl
from attndsl.lower.compile import CompileOptions

CROSS = """attndsl: 1
dims: {batch: dynamic, sq: dynamic, sk: dynamic}
inputs: {x: [batch, sq, 8], mem: [batch, sk, 8]}
blocks: {attn: {query: x, key_value: mem, heads: 4, kv_heads: 2}}
outputs: {y: attn}
"""



def _check(model, options, feeds):
    check_against_reference(model, feeds, 1e-5, options=options)


@pytest.mark.parametrize("x_shape, mem_shape", [((1, 3, 8), (1, 0, 8)), ((0, 3, 8), (0, 2, 8)),
                                                ((2, 0, 8), (2, 4, 8))])
def test_gqa_cross_attention_with_empty_tensors(x_shape, mem_shape):
    model = attndsl.parse_spec(CROSS, "x.yaml")
    feeds = {"x": np.ones(x_shape, np.float32), "mem": np.ones(mem_shape, np.float32)}
    _check(model, CompileOptions(sparse="dense"), feeds)


@pytest.mark.parametrize("mask", ["causal & sliding(2)", "causal"])
@pytest.mark.parametrize("shape", [(0, 3, 8), (1, 0, 8), (2, 5, 8)])
def test_block_sparse_with_empty_tensors(mask, shape):
    model = one_block(f"    heads: 2\n    kv_heads: 1\n    mask: \"{mask}\"", d=8)
    feeds = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    _check(model, CompileOptions(sparse="block", block_size=2), feeds)
