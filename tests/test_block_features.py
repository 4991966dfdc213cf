"""Block features generically: every registered feature prints through the IR printer, turns
back into a syntax tree setting that both writers print and both front ends read back to an
equal node, and is documented."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import one_block_yaml

from attndsl import parse_spec
from attndsl.features.block_base import format_node
from attndsl.features.registry import BLOCK_FEATURES, block_feature_of
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl, write_yaml
from attndsl.ir import print_ir
from attndsl.ir.build import feature_setting
from attndsl.source import Source

BLOCK = "    heads: 4\n    kv_heads: 2\n    mask: causal\n"


@pytest.mark.parametrize("feature", BLOCK_FEATURES, ids=lambda f: f.key)
def test_default_node_round_trips_through_both_writers(feature):
    # the feature's example mapping: `true` is not a feature for every key (`bias: true` is
    # the core setting, `clip_qkv` needs its limit)
    model = parse_spec(one_block_yaml(BLOCK + f"    {feature.key}: {feature.example}\n"),
                       "t.yaml")
    node = model.block("attn").feature(feature.key)
    assert node is not None and block_feature_of(node) is feature
    items = feature.format(node)
    assert [k for k, _ in items] == [o.name for o in feature.options]
    assert f"    {format_node(feature.key, items)}\n" in print_ir(model)
    spec = parse_source(Source(one_block_yaml(BLOCK), "t.yaml"))
    block = spec.blocks[0]
    spec = dataclasses.replace(spec, blocks=(dataclasses.replace(
        block, settings=(*block.settings, feature_setting(node))),))
    for text, path in ((write_yaml(spec), "w.yaml"), (write_dsl(spec), "w.attn")):
        again = parse_spec(text, path)
        assert again.block("attn").feature(feature.key) == node, text
        assert again == model


def test_rope_prints_every_option():
    model = parse_spec(one_block_yaml(BLOCK + "    rope: {theta: 500.0, interleaved: true}\n"),
                       "t.yaml")
    assert "    rope theta=500.0, dim=8, interleaved=true\n" in print_ir(model)
    assert model.block("attn").rope == model.block("attn").features[0]
