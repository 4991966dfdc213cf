"""Exact simplification of mask expressions to a canonical form.

``simplify`` rewrites bottom-up with the named rules of ``RULES`` (first match wins) until no
rule matches. Every rule is exactly equivalent on the whole domain docs/language.md allows: key and
query positions ``k, q >= 0`` of any lengths, any batch, any past length, and any head (or every
head ``h < heads`` when the head count is given). Nodes are never mutated: sub-expressions no
rule touches come back as they were (spans included), rewritten ones are new nodes. Rules build
only nodes the parser accepts when their inputs are parseable, so a simplified mask prints to
text that parses back to it.

Position primitives that depend only on the offset ``k - q`` (causal, window, sliding, dilated,
strided) are one family here: each allows the multiples of a period in an offset interval, so
``&`` of two of them is one member (when a primitive spells it: all but causal & strided),
and ``|`` is one when the two runs meet.

The facts about single primitives (their offsets, implication between two nodes of one kind,
constant cases, merges, canonical order) are the ``algebra`` records of the features
(``features.base.Algebra``); this module holds the rewrite machinery over ``&``, ``|``, ``~``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..features import nodes as n
from ..features.base import Algebra, Offsets
from ..features.registry import rule as feature_rule
from ..features.text import format_mask

__all__ = ["Offsets", "RULES", "Rule", "Step", "canonical", "covers", "disjoint", "hull",
           "implies", "offsets", "offsets_node", "simplify", "sort_key"]


def _facts(m: n.Mask) -> Algebra:
    return feature_rule("algebra", m)


def _same(a: n.Mask, b: n.Mask, fact: str) -> bool:
    """A same-kind fact (``implies``, ``disjoint``) between ``a`` and ``b``; False if none."""
    if type(a) is not type(b):
        return False
    f = getattr(_facts(a), fact)
    return f is not None and f(a, b)


@dataclass(frozen=True)
class Context:
    """What rules may assume: the block's head count (None: any number of heads)."""

    heads: int | None = None


@dataclass(frozen=True)
class Rule:
    """A named rewrite: ``match`` gives a binding (None: no match), ``rewrite`` uses it."""

    name: str
    doc: str
    match: Callable[[n.Mask, Context], object | None]
    rewrite: Callable[[n.Mask, object, Context], n.Mask]
    examples: tuple[tuple[str | n.Mask, str | n.Mask], ...] = ()
    heads: int | None = None  # the head count the examples assume


@dataclass(frozen=True)
class Step:
    """One applied rewrite, as ``simplify(..., trace=[])`` records it."""

    rule: str
    before: n.Mask
    after: n.Mask


def simplify(mask: n.Mask, heads: int | None = None,
             trace: list[Step] | None = None) -> n.Mask:
    """The canonical, simplified form of ``mask`` (cell for cell the same predicate)."""
    return _simplify(mask, Context(heads), trace)


def canonical(mask: n.Mask, heads: int | None = None) -> n.Mask:
    """``simplify`` without source spans: a plain value to compare, hash and print.

    Two masks with equal canonical forms are equivalent; the converse does not always hold."""
    return _strip(simplify(mask, heads))


def _simplify(m: n.Mask, ctx: Context, trace: list[Step] | None) -> n.Mask:
    kids = n.children(m)
    if kids:
        new = tuple(_simplify(c, ctx, trace) for c in kids)
        if any(a is not b for a, b in zip(new, kids, strict=True)):
            m = n.with_children(m, new)
    for rule in RULES:
        binding = rule.match(m, ctx)
        if binding is not None:
            out = rule.rewrite(m, binding, ctx)
            if trace is not None:
                trace.append(Step(rule.name, m, out))
            return _simplify(out, ctx, trace)
    return m


def _strip(m: n.Mask) -> n.Mask:
    if isinstance(m, n.Not):
        return n.Not(_strip(m.term))
    if isinstance(m, (n.And, n.Or)):
        return type(m)(tuple(_strip(t) for t in m.terms))
    return replace(m, span=None)


# ---------------------------------------------------------------- the offset family


def offsets(m: n.Mask) -> Offsets | None:
    """The offsets ``k - q`` a position primitive allows, or None if it is not offset-only."""
    f = _facts(m).offsets
    return None if f is None else f(m)


def hull(m: n.Mask) -> Offsets | None:
    """Offsets containing every cell ``m`` allows: its own for an offset-only node, else the
    feature's ``hull`` fact (chunk(c): |k - q| < c); None when unknown."""
    o = offsets(m)
    if o is not None:
        return o
    f = _facts(m).hull
    return None if f is None else f(m)


def _core(m: n.Mask) -> Offsets | None:
    """Offsets whose every cell a node that is not offset-only allows (chunk: the diagonal)."""
    f = _facts(m).core
    return None if f is None else f(m)


def _tight(o: Offsets) -> Offsets:
    """Bounds moved inward to multiples of the period."""
    lo, hi, p = o
    return (None if lo is None else -(-lo // p) * p, None if hi is None else hi // p * p, p)


def offsets_node(o: Offsets) -> n.Mask | None:
    """The canonical primitive allowing exactly the offsets ``o`` (None: no such primitive)."""
    lo, hi, p = _tight(o)
    if lo is None or hi is None:
        if lo is None and hi is None:
            return n.All() if p == 1 else n.Strided(p)
        return n.Causal() if (lo, hi, p) == (None, 0, 1) else None
    if lo > hi:
        return n.Never()
    if lo == hi or p == 1:
        return n.Sliding(1 - lo) if hi == 0 else n.Window(-lo, hi)
    return n.Dilated(-lo, hi, p)


def _intersect(a: Offsets, b: Offsets) -> Offsets:
    lo = b[0] if a[0] is None else a[0] if b[0] is None else max(a[0], b[0])
    hi = b[1] if a[1] is None else a[1] if b[1] is None else min(a[1], b[1])
    return (lo, hi, math.lcm(a[2], b[2]))


def _union(a: Offsets, b: Offsets) -> Offsets | None:
    """The union when it is one run of the family (same period, runs meet), else None."""
    a, b = _tight(a), _tight(b)
    if a[2] != b[2]:
        return None
    a, b = sorted((a, b), key=lambda o: -math.inf if o[0] is None else o[0])
    if a[1] is not None and b[0] is not None and b[0] > a[1] + a[2]:
        return None
    hi = None if a[1] is None or b[1] is None else max(a[1], b[1])
    return (a[0], hi, a[2])


def _contains(o: Offsets, x: int) -> bool:
    lo, hi, p = o
    return (lo is None or x >= lo) and (hi is None or x <= hi) and x % p == 0


def _offsets_subset(a: Offsets, b: Offsets) -> bool:
    lo, hi, p = _tight(a)
    if lo is not None and hi is not None:
        if lo > hi:
            return True
        if lo == hi:
            return _contains(b, lo)
    blo, bhi, bp = _tight(b)
    return (p % bp == 0 and (blo is None or (lo is not None and lo >= blo))
            and (bhi is None or (hi is not None and hi <= bhi)))


# ---------------------------------------------------------------- implication


def implies(a: n.Mask, b: n.Mask) -> bool:
    """True when every cell ``a`` allows ``b`` allows too. A sufficient test: False means
    "not shown", except between offset-only primitives, where it is exact."""
    if a == b or a == n.Never() or b == n.All():
        return True
    if isinstance(b, n.Or) and any(implies(a, t) for t in b.terms):
        return True
    if isinstance(a, n.And) and any(implies(t, b) for t in a.terms):
        return True
    if isinstance(a, n.Or):
        return all(implies(t, b) for t in a.terms)
    if isinstance(b, n.And):
        return all(implies(a, t) for t in b.terms)
    if isinstance(a, n.Not) and isinstance(b, n.Not):
        return implies(b.term, a.term)
    core, oa = _core(b), offsets(a)
    if core is not None and oa is not None:  # offsets inside b's sure cells
        return _offsets_subset(oa, core)
    ob = offsets(b)
    if ob is not None:
        ha = hull(a)
        return ha is not None and _offsets_subset(ha, ob)
    return _same(a, b, "implies")


def disjoint(a: n.Mask, b: n.Mask) -> bool:
    """True when no cell is allowed by both (a sufficient test, like ``implies``)."""
    if isinstance(b, n.Not) and implies(a, b.term) or isinstance(a, n.Not) and implies(b, a.term):
        return True
    for x, y in ((a, b), (b, a)):
        if isinstance(x, n.And) and any(disjoint(t, y) for t in x.terms):
            return True
        if isinstance(x, n.Or) and all(disjoint(t, y) for t in x.terms):
            return True
    if _same(a, b, "disjoint"):
        return True
    oa, ob = offsets(a), offsets(b)
    return oa is not None and ob is not None and offsets_node(_intersect(oa, ob)) == n.Never()


def covers(a: n.Mask, b: n.Mask) -> bool:
    """True when every cell is allowed by one of them (a sufficient test)."""
    return disjoint(_negate(a), _negate(b))


def _negate(m: n.Mask) -> n.Mask:
    return m.term if isinstance(m, n.Not) else n.Not(m)


# ---------------------------------------------------------------- rules

def sort_key(m: n.Mask) -> tuple[int, str]:
    """Canonical order of the terms of ``&`` and ``|``: by kind (the feature's rank), then by
    text."""
    return (_facts(m).rank, format_mask(m))


def _bool_op(m: n.Mask) -> bool:
    return isinstance(m, (n.And, n.Or))


def _unit(m: n.Mask) -> n.Mask:
    return n.All() if isinstance(m, n.And) else n.Never()


def _zero(m: n.Mask) -> n.Mask:
    return n.Never() if isinstance(m, n.And) else n.All()


def _with_terms(m: n.Mask, terms) -> n.Mask:
    return replace(m, terms=tuple(terms))


def _pair(m: n.Mask, combine) -> tuple[int, int, n.Mask] | None:
    """The first pair of terms (i < j) that ``combine`` merges into one node."""
    if not _bool_op(m):
        return None
    for i, a in enumerate(m.terms):
        for j in range(i + 1, len(m.terms)):
            out = combine(a, m.terms[j], isinstance(m, n.And))
            if out is not None:
                return i, j, out
    return None


def _merge_pair(m: n.Mask, b, ctx: Context) -> n.Mask:
    i, j, out = b
    return _with_terms(m, [out if x == i else t for x, t in enumerate(m.terms) if x != j])


def _flatten(m, ctx):
    return True if _bool_op(m) and any(type(t) is type(m) for t in m.terms) else None


def _do_flatten(m, b, ctx):
    return _with_terms(m, [x for t in m.terms for x in (t.terms if type(t) is type(m) else (t,))])


def _identity(m, ctx):
    return True if _bool_op(m) and any(t == _unit(m) for t in m.terms) else None


def _annihilate(m, ctx):
    return True if _bool_op(m) and any(t == _zero(m) for t in m.terms) else None


def _dedupe(m, ctx):
    return True if _bool_op(m) and len(set(m.terms)) < len(m.terms) else None


def _complement(m, ctx):
    if not _bool_op(m):
        return None
    test = disjoint if isinstance(m, n.And) else covers
    for i, t in enumerate(m.terms):  # each term against the others together
        if test(replace(m, terms=m.terms[:i] + m.terms[i + 1:]), t):
            return True
    return None


def _prune(m, ctx):
    """x & (y | z) with x & y none -> x & z; x | (y & z) with x | y all -> x | z."""
    if not _bool_op(m):
        return None
    dual, test = (n.Or, disjoint) if isinstance(m, n.And) else (n.And, covers)
    for i, o in enumerate(m.terms):
        if isinstance(o, dual):
            for t in o.terms:
                if any(test(a, t) for j, a in enumerate(m.terms) if j != i):
                    return i, _with_terms(o, [u for u in o.terms if u != t])
    return None


def _fact_rule(name: str):
    """A match from a leaf fact ``name(m)`` giving the rewritten node (or None)."""

    def match(m, ctx):
        f = getattr(_facts(m), name)
        return None if f is None else f(m)

    return match


def _heads_fold(m, ctx):
    if ctx.heads is None:
        return None
    f = _facts(m).fold
    if f is not None:
        return f(m, ctx.heads)
    if isinstance(m, n.Not):
        f = _facts(m.term).fold_not
        return None if f is None else f(m.term, ctx.heads)
    return None


def _offset_leaf(m, ctx):
    o = offsets(m)
    out = None if o is None else offsets_node(o)
    return out if out is not None and out != m else None


def _combine_offsets(a, b, is_and):
    oa, ob = offsets(a), offsets(b)
    if oa is None or ob is None:
        return None
    o = _intersect(oa, ob) if is_and else _union(oa, ob)
    return None if o is None else offsets_node(o)


def _combine_sets(a, b, is_and):
    if type(a) is not type(b):
        return None
    f = _facts(a).merge
    return None if f is None else f(a, b, is_and)


def _absorb(m, ctx):
    if not _bool_op(m):
        return None
    for i, a in enumerate(m.terms):
        for j, b in enumerate(m.terms):
            if i != j and implies(a, b):
                return j if isinstance(m, n.And) else i
    return None


def _factor(m, ctx):
    """Two terms of the dual operation sharing terms: (x & a) | (x & b), (x | a) & (x | b)."""
    if not _bool_op(m):
        return None
    dual = n.And if isinstance(m, n.Or) else n.Or
    for i, a in enumerate(m.terms):
        for j in range(i + 1, len(m.terms)):
            b = m.terms[j]
            if isinstance(a, dual) and isinstance(b, dual) and set(a.terms) & set(b.terms):
                return i, j
    return None


def _do_factor(m, b, ctx):
    i, j = b
    x, y = m.terms[i], m.terms[j]
    common = [t for t in x.terms if t in y.terms]
    rest = [type(x)(tuple(t for t in z.terms if t not in common)) for z in (x, y)]
    merged = type(x)((*common, type(m)(tuple(rest))))
    return _with_terms(m, [merged if k == i else t for k, t in enumerate(m.terms) if k != j])


def _sort(m, ctx):
    if not _bool_op(m):
        return None
    keys = [sort_key(t) for t in m.terms]
    return True if keys != sorted(keys) else None


def _when(cls, pred):
    return lambda m, ctx: True if isinstance(m, cls) and pred(m) else None


RULES: tuple[Rule, ...] = (
    Rule("flatten", "(x & y) & z -> x & y & z; (x | y) | z -> x | y | z", _flatten, _do_flatten,
         (("(causal & prefix(2)) & chunk(4)", "causal & chunk(4) & prefix(2)"),)),
    Rule("unit", "a '&' or '|' of one term is the term; of none, all / none",
         _when((n.And, n.Or), lambda m: len(m.terms) < 2),
         lambda m, b, ctx: m.terms[0] if m.terms else _unit(m),
         ((n.And((n.Causal(),)), "causal"), (n.Or(()), "none"))),
    Rule("identity", "x & all -> x; x | none -> x", _identity,
         lambda m, b, ctx: _with_terms(m, [t for t in m.terms if t != _unit(m)]),
         (("causal & all", "causal"), ("causal | none", "causal"))),
    Rule("annihilate", "x & none -> none; x | all -> all", _annihilate,
         lambda m, b, ctx: _zero(m), (("causal & none", "none"), ("causal | all", "all"))),
    Rule("dedupe", "x & x -> x; x | x -> x", _dedupe,
         lambda m, b, ctx: _with_terms(m, dict.fromkeys(m.terms)),
         (("causal & prefix(2) & causal", "causal & prefix(2)"),)),
    Rule("not-not", "~~x -> x", _when(n.Not, lambda m: isinstance(m.term, n.Not)),
         lambda m, b, ctx: m.term.term, (("~~chunk(4)", "chunk(4)"),)),
    Rule("not-constant", "~all -> none; ~none -> all",
         _when(n.Not, lambda m: m.term in (n.All(), n.Never())),
         lambda m, b, ctx: n.All() if m.term == n.Never() else n.Never(),
         (("~all", "none"), ("~none", "all"))),
    Rule("complement", "x & y -> none when no cell allows both (x & ~x, sliding(4) & ~causal); "
         "x | y -> all when every cell allows one (x | ~x)", _complement,
         lambda m, b, ctx: _zero(m),
         (("causal & ~causal", "none"), ("chunk(2) | ~chunk(2)", "all"),
          ("sliding(4) & ~causal", "none"), ("prefix(4) | ~prefix(2)", "all"),
          ("heads(0) & causal & (heads(1) | prefix(2) & ~prefix(3))", "none"),
          ("causal & prefix(3) & ~(causal & prefix(3))", "none"),
          ("sliding(1) & ~chunk(3)", "none"))),
    Rule("prune", "x & (y | z) -> x & z when x & y is none; x | (y & z) -> x | z when x | y "
         "is all", _prune,
         lambda m, b, ctx: _with_terms(m, [b[1] if k == b[0] else t
                                           for k, t in enumerate(m.terms)]),
         (("causal & (~causal | prefix(2))", "causal & prefix(2)"),
          ("chunk(4) | ~chunk(4) & prefix(2)", "chunk(4) | prefix(2)"),
          ("~causal & (sliding(3) | chunk(4))", "chunk(4) & ~causal"),
          ("heads(0) & (heads(1) & causal | sliding(2))", "heads(0) & sliding(2)"))),
    Rule("leaf-sort", "global(...) / heads(...) positions sorted and unique; none if empty",
         _fact_rule("normalize"), lambda m, b, ctx: b,
         ((n.Global((3, 1, 3)), "global(1, 3)"), (n.Heads((2, 0)), "heads(0, 2)"),
          (n.Global(()), "none"))),
    Rule("heads-fold", "with the head count H: heads(...) clipped to 0..H-1, all heads -> all, "
         "~heads(A) -> heads(complement of A)", _heads_fold, lambda m, b, ctx: b,
         (("heads(0..3)", "all"), ("heads(2..9)", "heads(2, 3)"), ("~heads(0, 1)", "heads(2, 3)"),
          ("~heads(0..3)", "none")), heads=4),
    Rule("offset-canonical", "offset-only primitives in one form: window(l, 0) -> sliding(l + 1), "
         "chunk(1) -> sliding(1), dilated(l, r, 1) -> window(l, r), dilated bounds cut to "
         "multiples of d, strided(1) -> all, empty windows -> none", _offset_leaf,
         lambda m, b, ctx: b,
         (("window(3, 0)", "sliding(4)"), ("chunk(1)", "sliding(1)"),
          ("dilated(2, 3, 1)", "window(2, 3)"), ("dilated(5, 3, 2)", "dilated(4, 2, 2)"),
          ("dilated(1, 1, 2)", "sliding(1)"), ("strided(1)", "all"),
          (n.Window(2, -3), "none"))),
    Rule("constant-leaf", "summary(c, n) with n >= c -> all; prefix(0) -> none",
         _fact_rule("constant"),
         lambda m, b, ctx: b, (("summary(4, 4)", "all"), ("prefix(0)", "none"))),
    Rule("and-offsets", "offset-only terms intersect: window(a, b) & window(c, d) -> "
         "window(min(a, c), min(b, d)); causal & window(l, r) -> window(l, min(r, 0)); "
         "window(l, r) & strided(s) -> dilated(l, r, s); strided(a) & strided(b) -> strided(lcm)",
         lambda m, ctx: _pair(m, _combine_offsets) if isinstance(m, n.And) else None,
         _merge_pair,
         (("window(3, 2) & window(1, 5)", "window(1, 2)"), ("causal & window(3, 2)", "sliding(4)"),
          ("causal & sliding(8)", "sliding(8)"), ("sliding(8) & strided(2)", "dilated(6, 0, 2)"),
          ("strided(2) & strided(3)", "strided(6)"),
          ("dilated(6, 6, 2) & causal", "dilated(6, 0, 2)"),
          ("dilated(6, 6, 2) & dilated(9, 9, 3)", "dilated(6, 6, 6)"))),
    Rule("or-offsets", "offset-only terms of one period whose runs meet unite: "
         "window(2, 0) | window(0, 3) -> window(2, 3)",
         lambda m, ctx: _pair(m, _combine_offsets) if isinstance(m, n.Or) else None,
         _merge_pair,
         (("sliding(3) | window(0, 3)", "window(2, 3)"),
          ("window(1, 1) | window(3, 3)", "window(3, 3)"),
          ("dilated(2, 0, 2) | dilated(0, 4, 2)", "dilated(2, 4, 2)"))),
    Rule("merge-sets", "heads(A) & heads(B) -> heads(A and B); heads(A) | heads(B) -> "
         "heads(A or B); global(P) | global(Q) -> global(P or Q)",
         lambda m, ctx: _pair(m, _combine_sets), _merge_pair,
         (("heads(0..3) & heads(2..5)", "heads(2, 3)"),
          ("heads(0, 1) | heads(4)", "heads(0, 1, 4)"),
          ("global(0) | global(5)", "global(0, 5)"))),
    Rule("absorb", "x & y -> x and x | y -> y when x implies y (x & (x | y) -> x, "
         "prefix(2) & prefix(4) -> prefix(2), causal | dilated(4, 0, 2) -> causal)", _absorb,
         lambda m, b, ctx: _with_terms(m, [t for i, t in enumerate(m.terms) if i != b]),
         (("prefix(2) & prefix(4)", "prefix(2)"), ("causal | dilated(4, 0, 2)", "causal"),
          ("summary(4, 1) | summary(4, 2)", "summary(4, 2)"),
          ("chunk(4) & (chunk(4) | prefix(2))", "chunk(4)"), ("chunk(2) & chunk(4)", "chunk(2)"),
          ("chunk(3) & window(2, 5)", "chunk(3)"),
          ("window(1, 1) & ~prefix(3) & ~prefix(5)", "window(1, 1) & ~prefix(5)"))),
    Rule("factor", "(x & a) | (x & b) -> x & (a | b); (x | a) & (x | b) -> x | (a & b)",
         _factor, _do_factor,
         (("heads(0, 1) & causal | heads(2, 3) & causal", "heads(0..3) & causal"),
          ("(prefix(2) | chunk(4)) & (prefix(2) | causal)", "prefix(2) | causal & chunk(4)"))),
    Rule("sort", "terms of '&' and '|' in canonical order (kind, then text)", _sort,
         lambda m, b, ctx: _with_terms(m, sorted(m.terms, key=sort_key)),
         (("prefix(2) & causal", "causal & prefix(2)"),)),
)
