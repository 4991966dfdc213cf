"""Block features generically: every registered feature prints through the IR printer, turns
back into a syntax tree setting that both writers print and both front ends read back to an
equal node, and is documented."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import check_against_reference, one_block_yaml

from attndsl import parse_spec, reference
from attndsl.features import registry
from attndsl.features.block_base import BlockFeature, BlockNode, format_node
from attndsl.features.registry import BLOCK_FEATURES, block_feature_of
from attndsl.frontend import parse_source
from attndsl.frontend.writers import write_dsl, write_yaml
from attndsl.inputs import random_inputs
from attndsl.ir import print_ir
from attndsl.ir.build import feature_setting
from attndsl.lower.compile import CompileOptions, compile_with_explanations
from attndsl.reference import run_reference
from attndsl.source import Source
from attndsl.weights import load_weights

BLOCK = "    heads: 4\n    kv_heads: 2\n    mask: causal\n"


# features that need more than `key: true` on BLOCK: (the block, the feature's setting)
SAMPLES = {"mla": ("    heads: 4\n    head_dim: 12\n    mask: causal\n    rope: {dim: 4}\n",
                   "    mla: {kv_lora_rank: 8}\n")}


@pytest.mark.parametrize("feature", BLOCK_FEATURES, ids=lambda f: f.key)
def test_default_node_round_trips_through_both_writers(feature):
    base, line = SAMPLES.get(feature.key, (BLOCK, f"    {feature.key}: true\n"))
    model = parse_spec(one_block_yaml(base + line), "t.yaml")
    node = model.block("attn").feature(feature.key)
    assert node is not None and block_feature_of(node) is feature
    items = feature.format(node)
    assert [k for k, _ in items] == [o.name for o in feature.options]
    assert f"    {format_node(feature.key, items)}\n" in print_ir(model)
    spec = parse_source(Source(one_block_yaml(base), "t.yaml"))
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


# ------------------------------------------------------------------ every hook point, both engines
# Test-only features (registered for one test by monkeypatching the registry) that use the hook
# points no shipped feature uses yet: ``project`` (replaced: v scaled by 3), ``softmax``
# (replaced: "softmax plus one", a zero-logit sink), ``attended`` (o * 2) and ``merged``
# (o * 0.5). The portable lowering (dense and block-sparse) must equal the reference.


@dataclasses.dataclass(frozen=True, slots=True)
class _Probe(BlockNode):
    pass


def _ref_project(node, st):
    q, k, v = reference._project(st)
    return q, k, 3.0 * v


def _low_project(node, st):
    q, k, v = st.low.project(st.block)
    return q, k, st.g.mul(v, st.g.scalar(3.0, np.float32))


def _ref_softmax(node, st, s, allowed):
    s = np.where(allowed, s, -np.inf)
    m = np.maximum(s.max(axis=-1, keepdims=True, initial=-np.inf), 0.0)
    e = np.where(allowed, np.exp(s - m), 0.0)
    return e / (e.sum(axis=-1, keepdims=True) + np.exp(-m))


def _low_softmax(node, st, s, allowed):
    g = st.g
    m = g.op("Max", g.reduce("ReduceMax", s, [-1]), g.scalar(0.0, np.float32))
    e = g.op("Exp", g.sub(s, m))
    return g.div(e, g.add(g.reduce("ReduceSum", e, [-1]), g.op("Exp", g.op("Neg", m))))


def _scale(factor):
    def ref(node, st):
        st.o = factor * st.o

    def low(node, st):  # attended: float32; merged: the model dtype (float32 here)
        st.o = st.g.mul(st.o, st.g.scalar(factor, np.float32))

    return ref, low


_ATT, _MERGED = _scale(2.0), _scale(0.5)
PROBE = BlockFeature(
    key="probe", node=_Probe, options=(), doc="test only", example="{}",
    make=lambda values, ctx: _Probe(), format=lambda n: (),
    # it replaces the projections but reuses the standard ones, so it lists their weights
    weights=lambda n, b: {f"{b.name}.{p}_proj.weight": shape for p, shape in (
        ("q", (b.heads * b.head_dim, b.width_q)), ("k", (b.kv_heads * b.head_dim, b.width_kv)),
        ("v", (b.kv_heads * b.v_head_dim, b.width_kv)))},
    summary=lambda n, b: "probe",
    reference={"project": _ref_project, "softmax": _ref_softmax, "attended": _ATT[0],
               "merged": _MERGED[0]},
    portable={"project": _low_project, "softmax": _low_softmax, "attended": _ATT[1],
              "merged": _MERGED[1]},
    ort=lambda n, b: "test feature")


@pytest.mark.parametrize("sparse", ["dense", "block"])
def test_every_hook_point_runs_in_both_engines(monkeypatch, sparse):
    monkeypatch.setitem(registry.BLOCK_BY_NODE, _Probe, PROBE)
    monkeypatch.setitem(registry._BLOCK_RANK, _Probe, 99)
    assert not registry.block_problems((PROBE,))
    plain = parse_spec(one_block_yaml(BLOCK.replace("causal", "causal & sliding(4)")
                                      + "    rope: true\n"), "t.yaml")
    block = dataclasses.replace(plain.block("attn"),
                                features=(*plain.block("attn").features, _Probe()))
    model = dataclasses.replace(plain, blocks=(block,))
    feed = random_inputs(model, {"batch": 2, "seq": 7}, seed=3)
    weights = load_weights(plain)
    options = CompileOptions(sparse=sparse, block_size=4)
    _, explain = compile_with_explanations(model, weights, options)
    assert explain[0].lowering.startswith("portable/block-sparse" if sparse == "block"
                                          else "portable/dense"), explain
    check_against_reference(model, feed, 1e-5, options=options, weights=weights)
    # the hooks change the result: v * 3 * 2 * 0.5, and the sink takes probability mass
    want = run_reference(model, weights, feed)["y"]
    base = run_reference(plain, weights, feed)["y"]
    assert not np.allclose(want, base)
    # ort: the test feature keeps the block portable, with its reason
    _, explain = compile_with_explanations(model, weights, CompileOptions(target="ort"))
    assert "test feature" in explain[0].reason
