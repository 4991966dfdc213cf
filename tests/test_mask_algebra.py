"""Mask algebra (simplify / canonical) and analysis (tile classes, density) against eval_mask."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import mask_text

from attndsl.errors import ErrorCollector
from attndsl.features import nodes as n
from attndsl.features.text import format_mask
from attndsl.frontend.expr import Placement, parse_expr
from attndsl.ir.calls import build_mask
from attndsl.masks.algebra import RULES, canonical, implies, simplify
from attndsl.masks.analysis import Tile, classify_tiles, density, is_symbolic, tile_counts
from attndsl.masks.eval import eval_mask
from attndsl.source import Source

# (q_len, k_len, past_len): self-attention grids; positions reach 40, past the parameters
# the strategies draw (windows <= 8, chunks <= 6, global positions <= 9)
GRIDS = ((40, 40, 0), (13, 29, 16), (7, 3, 0), (1, 5, 4))
HEAD_COUNTS = (1, 3, 4, 8)


def mask(text: str | n.Mask) -> n.Mask:
    if isinstance(text, n.Mask):
        return text
    errors = ErrorCollector()
    node = build_mask(parse_expr(text, Placement(Source(text))), errors)
    assert not errors.errors, errors.errors
    return node


def cells(m: n.Mask, heads: int, q_len: int, k_len: int, past: int, batch: int = 1,
          inputs=None) -> np.ndarray:
    out = eval_mask(m, heads, np.arange(q_len) + past, np.arange(k_len), batch, inputs)
    return np.broadcast_to(out, (batch, heads, q_len, k_len))


def assert_equivalent(a: n.Mask, b: n.Mask, heads: int | None = None, inputs=None, batch=1):
    for h in HEAD_COUNTS if heads is None else (heads,):
        for q_len, k_len, past in GRIDS if inputs is None else ((9, 9, 0),):
            ca = cells(a, h, q_len, k_len, past, batch, inputs)
            cb = cells(b, h, q_len, k_len, past, batch, inputs)
            bad = np.argwhere(ca != cb)
            assert not len(bad), (f"{format_mask(a)} != {format_mask(b)} (heads={h}, "
                                  f"past={past}) at [b, h, i, k] = {bad[0].tolist()}")


# ---------------------------------------------------------------- the rule table


EXAMPLES = [(r, before, after) for r in RULES for before, after in r.examples]


def test_rule_names_unique_and_documented():
    assert len({r.name for r in RULES}) == len(RULES)
    for r in RULES:
        assert r.doc and r.examples, r.name


@pytest.mark.parametrize("rule, before, after", EXAMPLES,
                         ids=[f"{r.name}:{format_mask(mask(b))}" for r, b, _ in EXAMPLES])
def test_rule_examples(rule, before, after):
    trace = []
    got = simplify(mask(before), rule.heads, trace)
    assert got == mask(after), format_mask(got)
    assert rule.name in [s.rule for s in trace]
    assert_equivalent(mask(before), got, rule.heads)
    for step in trace:
        assert_equivalent(step.before, step.after, rule.heads)


SMALL_OFFSET = [mask(t) for t in (
    *(f"window({l}, {r})" for l, r in itertools.product(range(4), range(4))),
    *(f"sliding({w})" for w in range(1, 5)), "causal", "chunk(1)",
    *(f"strided({s})" for s in range(1, 5)),
    *(f"dilated({l}, {r}, {d})" for l, r, d in itertools.product((0, 1, 3, 5), (0, 2, 4), (2, 3))),
)]


def offset_cells(m: n.Mask) -> np.ndarray:
    return cells(m, 1, 41, 41, 0)[0, 0]  # every offset -40 .. 40


@pytest.mark.parametrize("op", [n.And, n.Or])
def test_offset_pairs_combine_exactly(op):
    """and-offsets / or-offsets / absorb over every pair of small offset primitives."""
    table = {m: offset_cells(m) for m in SMALL_OFFSET}
    for a, b in itertools.product(SMALL_OFFSET, repeat=2):
        s = simplify(op((a, b)))
        want = table[a] & table[b] if op is n.And else table[a] | table[b]
        assert np.array_equal(offset_cells(s), want), format_mask(op((a, b)))
        if op is n.And and isinstance(s, n.And):  # only causal & strided has no one primitive
            assert {type(t) for t in s.terms} == {n.Causal, n.Strided}, format_mask(s)


def test_implies_is_exact_on_offset_primitives():
    table = {m: offset_cells(m) for m in SMALL_OFFSET}
    for a, b in itertools.product(SMALL_OFFSET, repeat=2):
        # the windows stay inside +-40, so the grid decides even for causal and strided
        assert implies(a, b) == (not np.any(table[a] & ~table[b])), (a, b)


@pytest.mark.parametrize("l, r", list(itertools.product(range(6), range(6))))
def test_causal_and_window(l, r):
    assert simplify(mask(f"causal & window({l}, {r})")) == mask(f"sliding({l + 1})")
    assert simplify(mask(f"window({l}, {r}) & causal & sliding(3)")) == \
        mask(f"sliding({min(l + 1, 3)})")


def test_heads_rules_need_the_head_count():
    assert simplify(mask("heads(0..3) & causal")) == mask("heads(0..3) & causal")
    assert simplify(mask("heads(0..3) & causal"), heads=4) == mask("causal")
    assert simplify(mask("heads(0..1) & causal | heads(2..3) & causal"), heads=4) == \
        mask("causal")
    assert simplify(mask("~heads(1) & sliding(2)"), heads=3) == mask("heads(0, 2) & sliding(2)")


def test_canonical_drops_spans_and_simplify_keeps_untouched_nodes():
    m = mask("causal & padding(lengths)")
    s = simplify(m)
    assert all(t.span is not None for t in s.terms)
    assert s.terms[0] is m.terms[0]
    c = canonical(m)
    assert c == s and all(t.span is None for t in n.walk(c))
    assert simplify(mask("sliding(3) & causal")).span is None


# ---------------------------------------------------------------- property tests


def position_masks(random_leaf: bool = False):
    return mask_text(n_heads=4, inputs=False, random_leaf=random_leaf).map(mask)


@settings(deadline=None)
@given(position_masks(random_leaf=True), st.sampled_from([None, 1, 3, 4]))
def test_simplify_is_exact_and_idempotent(m, heads):
    trace = []
    s = simplify(m, heads, trace)
    assert_equivalent(m, s, heads)
    for step in trace:
        assert_equivalent(step.before, step.after, heads)
    assert simplify(s, heads) == s
    assert format_mask(simplify(s, heads)) == format_mask(s)
    assert mask(format_mask(s)) == s  # prints to text that parses back to itself


@settings(deadline=None)
@given(mask_text(n_heads=2, inputs=True).map(mask), st.integers(0, 2**31 - 1))
def test_simplify_is_exact_with_inputs(m, seed):
    rng = np.random.default_rng(seed)
    inputs = {"lengths": rng.integers(0, 10, size=2),
              "doc": np.sort(rng.integers(0, 3, size=(2, 9)), axis=1),
              "m": rng.random((9, 9)) < 0.7}
    assert_equivalent(m, simplify(m, 2), heads=2, inputs=inputs, batch=2)


def exact_tiles(m: n.Mask, heads: int, q_len: int, k_len: int, tq: int, tk: int, past: int,
                inputs=None, batch=1) -> np.ndarray:
    """The exact classes from eval_mask, the slow way, per (batch, head, tile)."""
    c = cells(m, heads, q_len, k_len, past, batch, inputs).astype(np.int64)
    rows, cols = np.arange(0, q_len, tq), np.arange(0, k_len, tk)
    count = np.add.reduceat(np.add.reduceat(c, rows, axis=2), cols, axis=3)
    size = np.outer(np.diff([*rows, q_len]), np.diff([*cols, k_len]))
    return np.where(count == size, Tile.FULL, np.where(count > 0, Tile.PARTIAL, Tile.EMPTY))


def check_sound(got: np.ndarray, exact: np.ndarray) -> int:
    """FULL / EMPTY never wrong; returns how many PARTIAL answers were FULL / EMPTY."""
    got = np.broadcast_to(got, exact.shape)
    wrong = (got != Tile.PARTIAL) & (got != exact)
    assert not wrong.any(), np.argwhere(wrong)[0].tolist()
    return int(((got == Tile.PARTIAL) & (exact != Tile.PARTIAL)).sum())


lengths = st.integers(1, 40)


@settings(deadline=None)
@given(position_masks(random_leaf=True), st.sampled_from([1, 4]), lengths, lengths,
       st.integers(0, 12), st.booleans(), st.integers(1, 9), st.integers(1, 9))
def test_classify_tiles_never_wrong(m, heads, q_len, k_len, past, self_attention, tq, tk):
    got = classify_tiles(m, heads, q_len, k_len, (tq, tk), past, self_attention)
    nq, nk = -(-q_len // tq), -(-k_len // tk)
    assert got.dtype == np.int8 and got.shape in ((1, nq, nk), (heads, nq, nk))
    if got.shape[0] == 1 and heads > 1:
        assert not any(isinstance(t, n.Heads) for t in n.walk(simplify(m, heads)))
    offset = past if self_attention else 0
    check_sound(got[None], exact_tiles(m, heads, q_len, k_len, tq, tk, offset))
    counts = tile_counts(m, heads, q_len, k_len, (tq, tk), past, self_attention)
    assert sum(counts.values()) == heads * nq * nk


@settings(deadline=None)
@given(mask_text(n_heads=2, inputs=True).map(mask), st.integers(0, 2**31 - 1),
       st.integers(1, 5))
def test_classify_tiles_with_inputs_holds_for_any_input(m, seed, tile):
    rng = np.random.default_rng(seed)
    inputs = {"lengths": rng.integers(0, 10, size=3),
              "doc": np.sort(rng.integers(0, 3, size=(3, 9)), axis=1),
              "m": rng.random((9, 9)) < 0.7}
    got = classify_tiles(m, 2, 9, 9, tile)
    check_sound(got[None], exact_tiles(m, 2, 9, 9, tile, tile, 0, inputs, batch=3))


@settings(deadline=None)
@given(mask_text(n_heads=3, inputs=True, random_leaf=True).map(mask), st.integers(0, 10**6),
       st.integers(1, 30), st.integers(0, 6), st.integers(1, 8))
def test_density_is_exact(m, seed, q_len, past, tile):
    k_len = q_len + past
    rng = np.random.default_rng(seed)
    inputs = {"lengths": rng.integers(0, k_len + 1, size=2),
              "doc": np.sort(rng.integers(0, 3, size=(2, k_len)), axis=1),
              "m": rng.random((q_len, k_len)) < 0.6}
    got = density(m, 3, q_len, k_len, past, inputs=inputs, tile=tile)
    want = cells(m, 3, q_len, k_len, past, 2, inputs).mean()
    assert got == pytest.approx(want, abs=1e-12)


def test_density_needs_inputs_and_scales():
    assert density(mask("causal & padding(lengths)"), 2, 8, 8) is None
    assert density(mask("padding(lengths) & none"), 2, 8, 8) == 0.0
    assert density(mask("causal"), 1, 4096, 4096) == pytest.approx(4097 / 8192)
    got = density(mask("sliding(128) & causal"), 8, 8192, 8192)
    assert got == pytest.approx((128 * 8192 - 128 * 127 / 2) / 8192**2)


def test_is_symbolic():
    assert is_symbolic(mask("causal & sliding(4) | heads(0) & global(0)"))
    assert not is_symbolic(mask("causal & random(2)"))
    assert not is_symbolic(mask("causal & padding(lengths)"))


# ---------------------------------------------------------------- precision on known patterns

CATALOGUE = [
    "causal", "sliding(64)", "causal & sliding(100)", "window(50, 30)", "chunk(128) & causal",
    "chunk(100) & causal", "prefix(40) | causal", "global(0, 1, 2) | sliding(32)",
    "causal & (chunk(64) | summary(64, 8))", "causal & (strided(64) | sliding(64))",
    "heads(0..3) & sliding(32) | heads(4..7) & causal", "dilated(128, 0, 2)", "all", "none",
    "~causal", "causal & ~sliding(16)", "random(2, block=32, seed=0) | sliding(32)",
    "causal & summary(32, 4)", "strided(3) & causal", "causal | prefix(32) & ~chunk(16)",
    "causal & (sliding(64) | prefix(4))", "window(64, 64) | global(0, 1)",
    "window(16, 16) | global(0, 1) | random(3, block=16, seed=0)",
    "causal & (sliding(24) | strided(24))", "heads(0) & chunk(32) | heads(1..7) & sliding(40)",
]


@pytest.mark.parametrize("text", CATALOGUE)
@pytest.mark.parametrize("q_len, k_len, past, tile", [(300, 300, 0, 32), (77, 333, 256, 16),
                                                      (256, 256, 0, 64)])
def test_catalogue_classification(text, q_len, k_len, past, tile):
    m = mask(text)
    got = classify_tiles(m, 8, q_len, k_len, tile, past)
    assert check_sound(got[None], exact_tiles(m, 8, q_len, k_len, tile, tile, past)) == 0


@pytest.mark.parametrize("text", CATALOGUE)
@pytest.mark.parametrize("term", ["padding(lengths)", "document(doc)", "mask(m)"])
def test_input_terms_decide_only_what_they_must(text, term):
    """x & input is EMPTY where x is, else PARTIAL; x | input is FULL where x is, else PARTIAL."""
    base = classify_tiles(mask(text), 8, 100, 130, 16, 30)
    for op, keep in (("&", Tile.EMPTY), ("|", Tile.FULL)):
        got = classify_tiles(mask(f"({text}) {op} {term}"), 8, 100, 130, 16, 30)
        want = np.where(base == keep, keep, Tile.PARTIAL)
        assert np.array_equal(np.broadcast_to(got, want.shape), want)


