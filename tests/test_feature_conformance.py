"""Every registered mask primitive's facts agree with its own ``eval`` rule.

Sample nodes are built from each feature's declared parameters (so a new primitive is
covered as soon as it is registered) and every fact a stage states about them is checked
cell by cell on a small self-attention grid with a past: canonical text parses back, offsets,
hull, core and bounds contain the allowed cells, witnesses are kept by every row, the support
says what the cells depend on, the fused-kernel bounds are exact, and the algebra's
per-feature facts (implies, disjoint, merge, constant, normalize, fold) hold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attndsl.errors import ErrorCollector
from attndsl.features import nodes as mn
from attndsl.features import registry
from attndsl.features.base import Feature
from attndsl.features.text import format_leaf, format_mask
from attndsl.frontend.expr import Placement, parse_expr
from attndsl.ir.calls import build_mask
from attndsl.lower.mask_ops import row_witnesses
from attndsl.lower.plan import offset_bounds
from attndsl.masks.algebra import hull, offsets, simplify
from attndsl.masks.eval import eval_mask
from attndsl.source import Source

BATCH, HEADS, PAST, Q_LEN = 2, 3, 3, 9
K_LEN = PAST + Q_LEN
Q = PAST + np.arange(Q_LEN)
K = np.arange(K_LEN)
REL = K[None, :] - Q[:, None]  # k - q, [Q, K]


def _values(param) -> list[object]:
    if param.kind == "float":
        return [1.5]
    if param.kind == "bool":
        return [True, False]
    if param.kind == "input":
        return [("input", param.name)]
    ints = sorted({max(param.minimum, 0), max(param.minimum, 0) + 1, max(param.minimum, 0) + 3})
    return ints + ([("input", param.name)] if param.kind == "int_or_input" else [])


def samples(f: Feature) -> list[mn.Mask]:
    """Nodes of ``f`` for small parameter values (those its argument checks accept)."""
    if f.variadic:
        return [f.make([0], None), f.make([0, 2], None), f.make([1, 2, 4], None)]
    out = []
    for values in itertools.product(*(_values(p) for p in f.params)):
        values = list(values)
        if f.make is not None:
            out.append(f.make(values, None))
            continue
        values = [v[1] if isinstance(v, tuple) else v for v in values]
        if f.check_args is not None:
            errors = ErrorCollector()
            f.check_args(f.name, values, None, errors)
            if errors.errors:
                continue
        out.append(f.node(*values))
    return out


CASES = [(name, node) for name, f in sorted(registry.MASKS.items()) for node in samples(f)]
IDS = [format_leaf(node) for _, node in CASES]


def example_inputs(node: mn.Mask) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, role in registry.rule("inputs", node)(node):
        if role == "lengths":
            out[name] = np.array([K_LEN - 4, 0])
        elif role == "ids":
            out[name] = np.cumsum(rng.random((BATCH, K_LEN)) < 0.3, axis=1)
        else:
            assert role == "cells", role
            out[name] = rng.random((BATCH, HEADS, Q_LEN, K_LEN)) < 0.7
    return out


def cells(m: mn.Mask, inputs) -> np.ndarray:
    return np.broadcast_to(eval_mask(m, HEADS, Q, K, BATCH, inputs), (BATCH, HEADS, Q_LEN, K_LEN))


def in_offsets(o) -> np.ndarray:
    lo, hi, p = o
    return ((lo is None) | ((lo or 0) <= REL)) & ((hi is None) | ((hi or 0) >= REL)) & (
        REL % p == 0)


def test_every_feature_has_samples():
    assert {name for name, _ in CASES} == set(registry.MASKS)


@pytest.mark.parametrize("name,node", CASES, ids=IDS)
def test_facts_agree_with_eval(name, node):
    inputs = example_inputs(node)
    got = cells(node, inputs)
    errors = ErrorCollector()
    text = format_mask(node)
    assert build_mask(parse_expr(text, Placement(Source(text))), errors) == node, text
    assert np.array_equal(cells(simplify(node, HEADS), inputs), got), "simplify"
    o = offsets(node)
    if o is not None:
        assert np.array_equal(got, np.broadcast_to(in_offsets(o), got.shape)), "offsets"
    h = hull(node)
    if h is not None:
        assert not (got & ~in_offsets(h)).any(), "hull"
    core = registry.rule("algebra", node).core
    if core is not None:
        assert got[:, :, in_offsets(core(node))].all(), "core"
    b = offset_bounds(node)
    if b is None:
        assert not got.any(), "bounds: no cell"
    else:
        lo, hi = b
        outside = ((lo is not None) & ((lo or 0) > REL)) | ((hi is not None) & ((hi or 0) < REL))
        assert not (got & outside).any(), "bounds"
    keep = row_witnesses(node, True)
    if "zero" in keep:
        assert got[..., 0].all(), "witness zero"
    if "diag" in keep:
        assert got[..., REL == 0].all(), "witness diag"
    assert registry.rule("viz", node)(node) >= 0


@pytest.mark.parametrize("name,node", CASES, ids=IDS)
def test_support_says_what_cells_depend_on(name, node):
    got = cells(node, example_inputs(node))
    tiles = registry.rule("tiles", node)
    support = tiles.support(node, None)
    assert support in "cdkrpi"
    if support != "i":
        assert not registry.rule("inputs", node)(node)
    if support in "cdk":
        assert (got == got[:1, :1]).all(), "depends on batch or head"
    if support == "c":
        assert (got == got.flat[0]).all()
    if support == "d":
        for d in np.unique(REL):
            assert len(np.unique(got[..., d == REL])) == 1, f"offset {d}"
    if support == "k":
        assert (got == got[:, :, :1]).all(), "depends on the query"
    if tiles.heads is not None:
        allowed = set(tiles.heads(node))
        for head in range(HEADS):
            assert (got[:, head] == (head in allowed)).all()


@pytest.mark.parametrize("name,node", CASES, ids=IDS)
def test_fused_kernel_reading_is_exact(name, node):
    fused = registry.rule("ort", node)(node)
    got = cells(node, example_inputs(node))
    if fused == "input":
        assert registry.rule("inputs", node)(node)
    elif fused is not None:
        lo, hi = fused  # bounds on q - k
        want = (lo <= -REL) & (hi >= -REL)
        assert np.array_equal(got, np.broadcast_to(want, got.shape))


PAIRS = [(a, b) for name, f in sorted(registry.MASKS.items())  # same-kind facts: one class
         for a, b in itertools.product(samples(f), repeat=2) if type(a) is type(b)]


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{format_leaf(a)},{format_leaf(b)}"
                                            for a, b in PAIRS])
def test_same_kind_algebra_facts(a, b):
    facts = registry.rule("algebra", a)
    inputs = {**example_inputs(a), **example_inputs(b)}
    ca, cb = cells(a, inputs), cells(b, inputs)
    if facts.implies is not None and facts.implies(a, b):
        assert not (ca & ~cb).any(), "implies"
    if facts.disjoint is not None and facts.disjoint(a, b):
        assert not (ca & cb).any(), "disjoint"
    if facts.merge is not None:
        for is_and in (True, False):
            out = facts.merge(a, b, is_and)
            if out is not None:
                assert np.array_equal(cells(out, inputs), (ca & cb) if is_and else (ca | cb))
    for rewrite in (facts.constant, facts.normalize):
        out = None if rewrite is None else rewrite(a)
        if out is not None:
            assert np.array_equal(cells(out, inputs), ca)
    if facts.fold is not None:
        out = facts.fold(a, HEADS)
        if out is not None:
            assert np.array_equal(cells(out, inputs), ca)
    if facts.fold_not is not None:
        out = facts.fold_not(a, HEADS)
        if out is not None:
            assert np.array_equal(cells(out, inputs), ~ca)
