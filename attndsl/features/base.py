"""The shape of a feature: node base classes, the structural combinators, parameters, and the
``Feature`` record through which one module declares a mask primitive or a score modifier and
registers the rule of every stage (see docs/architecture.md).

This package sits between ``frontend`` and ``ir``: it imports only ``attndsl.source``,
``attndsl.errors``, numpy and the standard library. Rules never import onnx or the lowering;
they call methods on the context objects the engines hand them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace

from ..source import Span

# (lo, hi, period): offsets k - q with lo <= k - q <= hi and period | k - q; None = unbounded
Offsets = tuple[int | None, int | None, int]
# bounds (lo, hi) on the offsets k - q of every allowed cell; None = that side is unbounded
Bounds = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class Mask:
    """Base class of mask expressions: boolean predicates over (batch b, head h, query
    position q, key position k), positions absolute. Nodes are frozen and hashable."""


@dataclass(frozen=True, slots=True)
class Score:
    """Base class of score modifiers."""


def span_field() -> Span | None:
    """The ``span`` field of every node: kept for messages, left out of equality and repr."""
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class And(Mask):
    terms: tuple[Mask, ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Or(Mask):
    terms: tuple[Mask, ...]
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Not(Mask):
    term: Mask
    span: Span | None = span_field()


def children(m: Mask) -> tuple[Mask, ...]:
    """The operands of a combinator; () for a primitive."""
    if isinstance(m, (And, Or)):
        return m.terms
    if isinstance(m, Not):
        return (m.term,)
    return ()


def with_children(m: Mask, kids: tuple[Mask, ...]) -> Mask:
    """``m`` with its operands replaced (span kept); a primitive comes back as it is."""
    if isinstance(m, Not):
        return replace(m, term=kids[0])
    if isinstance(m, (And, Or)):
        return replace(m, terms=tuple(kids))
    return m


def walk(m: Mask) -> Iterator[Mask]:
    """Every node of a mask expression, pre-order."""
    yield m
    for c in children(m):
        yield from walk(c)


def input_names(m: Mask) -> tuple[str, ...]:
    """The graph inputs a mask reads, in first-use order."""
    seen: dict[str, None] = {}
    for node in walk(m):
        name = getattr(node, "input", None)
        if name is not None:
            seen.setdefault(name, None)
    return tuple(seen)


def format_value(v: object) -> str:
    """A parameter value as the expression syntax writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


# ---------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One parameter of a call. ``kind``: "int" (>= minimum), "float" (> 0 and finite),
    "bool", "input" (names a graph input), "int_or_input"; ``default`` None = required."""

    name: str
    kind: str
    default: object = None
    minimum: int = 0


# ---------------------------------------------------------------- stage records


@dataclass(frozen=True)
class Algebra:
    """Facts the mask algebra (``masks/algebra.py``) reads. ``rank`` orders the terms of
    ``&``/``|`` in canonical form (kind first, then text); the rest are optional (None: no
    such fact):

    - ``offsets(m)``: the offsets ``k - q`` an offset-only node allows (None: not offset-only);
    - ``hull(m)``: offsets containing every allowed cell, for nodes not offset-only;
    - ``core(m)``: offsets whose every cell is allowed, for nodes not offset-only;
    - ``implies(a, b)`` / ``disjoint(a, b)``: between two nodes of this class;
    - ``merge(a, b, is_and)``: ``a & b`` (or ``a | b``) as one node of this class, or None;
    - ``normalize(m)``: rule leaf-sort, the node with sorted unique values, or None;
    - ``constant(m)``: rule constant-leaf, all / none when the parameters decide, or None;
    - ``fold(m, heads)`` / ``fold_not(m, heads)``: rule heads-fold given the head count, for
      ``m`` and for ``~m``, or None.
    """

    rank: int
    offsets: Callable[[Mask], Offsets | None] | None = None
    hull: Callable[[Mask], Offsets | None] | None = None
    core: Callable[[Mask], Offsets | None] | None = None
    implies: Callable[[Mask, Mask], bool] | None = None
    disjoint: Callable[[Mask, Mask], bool] | None = None
    merge: Callable[[Mask, Mask, bool], Mask | None] | None = None
    normalize: Callable[[Mask], Mask | None] | None = None
    constant: Callable[[Mask], Mask | None] | None = None
    fold: Callable[[Mask, int], Mask | None] | None = None
    fold_not: Callable[[Mask, int], Mask | None] | None = None


@dataclass(frozen=True)
class Tiles:
    """Facts of the tile analysis (``masks/analysis.py``).

    ``support(m, sub)``: what the node depends on: 'c' constant, 'd' the offset k - q only,
    'k' the key only, 'r' a static cell table (random), 'i' graph inputs, 'p' other
    positions; ``sub`` gives a child's support. ``classify(m, grid)``: exact tile classes
    for support 'p' (None: PARTIAL). ``heads(m)``: the heads allowed by a node that depends
    on the head alone (fixed per head before classification). ``sizes(m)``: tile sizes that
    fit the node's own blocks, offered to the block-sparse planner (random: its block)."""

    support: Callable[[Mask, Callable[[Mask], str]], str]
    classify: Callable[[Mask, object], object] | None = None
    heads: Callable[[Mask], tuple[int, ...]] | None = None
    sizes: Callable[[Mask], tuple[int, ...]] | None = None


# stage name -> the kinds of feature that must provide it
MASK_STAGES = ("format", "eval", "witnesses", "algebra", "tiles", "bounds", "lower", "ort",
               "viz", "inputs")
SCORE_STAGES = ("format", "eval", "lower", "ort", "inputs", "weights")
# &, |, ~ (``features/masks/logic.py``): printed by ``text.format_mask`` with precedence
COMBINATOR_STAGES = tuple(s for s in MASK_STAGES if s != "format")


@dataclass(frozen=True)
class Feature:
    """One mask primitive or score modifier, declared once in its own module.

    Build: ``name``, ``params`` (checked by ``ir/calls.py``), ``variadic`` (``global(i, j,
    ...)``: every argument is a value of the one parameter, ``a..b`` ranges allowed), and the
    optional hooks ``make(values, span)`` (the node from the checked values, default
    ``node(*values, span=span)``; "input" values arrive as ``("input", name)``),
    ``check_args(name, values, span, errors)`` (cross-parameter checks) and ``check(node,
    ctx)`` (checks against the spec: inputs, sizes; ``ctx`` is ``ir.build``'s checker).

    Stages (None = missing; ``tests/test_feature_registry.py`` requires every stage of
    ``MASK_STAGES`` / ``SCORE_STAGES``), each documented in docs/architecture.md:

    - ``format(node) -> str``: canonical text of a call;
    - ``eval``: masks ``eval(node, ev)``, a bool array broadcastable to [B, H, Sq, Sk]
      (``ev.q``, ``ev.k``, ``ev.heads``, ``ev.inputs``, ``ev.eval(sub)``); scores
      ``eval(node, ev, s, allowed) -> (s, allowed)``, the float64 logits [B, H, Sq, Sk] and
      the allowed cells after the modifier (``ev.rel`` = k - q, ``ev.heads``, ``ev.block``,
      ``ev.inputs``, ``ev.weight(name)``);
    - ``witnesses(node, diagonal, sub) -> frozenset``: keys every query row keeps;
    - ``algebra``: an ``Algebra``; ``tiles``: a ``Tiles``;
    - ``bounds(node, ctx) -> Bounds | None``: sound bounds on the offsets of allowed cells
      (None: no cell); ``ctx.bounds(sub)``, ``ctx.offsets(sub)``;
    - ``lower``: portable ONNX; masks ``lower(node, ctx)`` return a bool tensor name or a
      Python bool (``ctx.g``, ``ctx.pos``, ``ctx.block``, ``ctx.static_lens``,
      ``ctx.lower(sub)``, ``ctx.int64_input(name)``); scores ``lower(node, ctx, s)`` return
      the new float32 logits (``ctx.g``, ``ctx.pos``, ``ctx.block``, ``ctx.float32(name)``,
      ``ctx.to_float(x)``);
    - ``ort(node)``: masks, bounds ``(lo, hi)`` on ``q - k`` the fused kernels express
      (floats, +-inf unbounded), "input" (an input-driven term) or None (no fused form);
      scores, ``("softcap", cap)`` or ``("add", text)``;
    - ``viz(node) -> int``: the widest span of the pattern (0: none), for picture lengths;
    - ``inputs(node) -> tuple[(name, role), ...]``: graph inputs read, role "lengths"
      ([batch] int), "ids" ([batch, k_len] int) or "cells" (broadcastable to [B, H, Sq, Sk]);
    - ``weights(node, block) -> dict[name, shape]``: parameters a score modifier needs.
    """

    name: str
    kind: str  # "mask" | "score" | "combinator"
    node: type
    params: tuple[Param, ...] = ()
    doc: str = ""
    variadic: bool = False
    make: Callable[..., object] | None = None
    check_args: Callable[..., None] | None = None
    check: Callable[..., None] | None = None
    format: Callable[..., str] | None = None
    eval: Callable[..., object] | None = None
    witnesses: Callable[..., frozenset[str]] | None = None
    algebra: Algebra | None = None
    tiles: Tiles | None = None
    bounds: Callable[..., Bounds | None] | None = None
    lower: Callable[..., object] | None = None
    ort: Callable[..., object] | None = None
    viz: Callable[..., int] | None = None
    inputs: Callable[..., tuple[tuple[str, str], ...]] | None = None
    weights: Callable[..., dict[str, tuple[int, ...]]] | None = None

    def missing(self) -> tuple[str, ...]:
        """The stages this feature's kind requires that it does not provide."""
        need = {"mask": MASK_STAGES, "score": SCORE_STAGES,
                "combinator": COMBINATOR_STAGES}[self.kind]
        return tuple(s for s in need if getattr(self, s) is None)


STAGES = tuple(f.name for f in fields(Feature) if f.name in MASK_STAGES + SCORE_STAGES)


# ---------------------------------------------------------------- small rule helpers


def constant(value: object) -> Callable[..., object]:
    """A rule that returns ``value`` whatever it is given."""
    return lambda *args, **kw: value


def bounds_from(offsets: Callable[[Mask], Offsets | None]) -> Callable[..., Bounds | None]:
    """The ``bounds`` rule of an offset-only node from its ``offsets`` fact."""

    def rule(m: Mask, ctx: object) -> Bounds | None:
        o = offsets(m)
        return (None, None) if o is None else (o[0], o[1])

    return rule


NO_INPUTS: Callable[..., tuple[tuple[str, str], ...]] = constant(())
UNBOUNDED: Callable[..., Bounds | None] = constant((None, None))
NO_WITNESS: Callable[..., frozenset[str]] = constant(frozenset())
NO_FUSED: Callable[..., object] = constant(None)


def witness_all(m: Mask, diagonal: bool, sub: object) -> frozenset[str]:
    """Every row keeps key 0 and (with ``diagonal``) its own position."""
    return frozenset({"zero", "diag"} if diagonal else {"zero"})


def witness_diag(m: Mask, diagonal: bool, sub: object) -> frozenset[str]:
    """Every row keeps its own position (claimed only with ``diagonal``)."""
    return frozenset({"diag"} if diagonal else ())
