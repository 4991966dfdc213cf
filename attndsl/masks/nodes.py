"""Typed mask expressions and score modifiers: the IR's view of a block's pattern.

A mask is a boolean predicate over (batch b, head h, query position q, key position k);
positions are absolute (docs/language.md, "Positions"). Nodes are frozen and hashable, so
canonical forms can be compared and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..source import Span


@dataclass(frozen=True, slots=True)
class Mask:
    """Base class of mask expressions."""


def _sp() -> Span | None:
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class All(Mask):
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Never(Mask):
    """Spelled ``none``."""

    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Causal(Mask):
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Window(Mask):
    """``q - left <= k <= q + right``."""

    left: int
    right: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Sliding(Mask):
    """``k <= q and q - k < size``."""

    size: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Dilated(Mask):
    left: int
    right: int
    dilation: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Strided(Mask):
    stride: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Chunk(Mask):
    size: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Summary(Mask):
    """The last ``n`` key positions of every ``c``-block."""

    c: int
    n: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Prefix(Mask):
    """``k < n`` for a literal n."""

    n: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Global(Mask):
    """``q`` or ``k`` is one of ``positions``."""

    positions: tuple[int, ...]
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Heads(Mask):
    heads: tuple[int, ...]
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Random(Mask):
    """BigBird random blocks; needs static lengths (see ``random_blocks``)."""

    r: int
    block: int
    seed: int
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Padding(Mask):
    """``k < len[b]``; ``input`` names an int64 ``[batch]`` input. ``prefix(len)`` is the same."""

    input: str
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Document(Mask):
    """``ids[b, q] == ids[b, k]``; ``input`` is int64 ``[batch, k_len]``."""

    input: str
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class MaskInput(Mask):
    """``mask(m)``: a bool input broadcastable to ``[batch, heads, q_len, k_len]``."""

    input: str
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class And(Mask):
    terms: tuple[Mask, ...]
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Or(Mask):
    terms: tuple[Mask, ...]
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Not(Mask):
    term: Mask
    span: Span | None = _sp()


# ---------------------------------------------------------------- score modifiers


@dataclass(frozen=True, slots=True)
class Score:
    """Base class of score modifiers."""


@dataclass(frozen=True, slots=True)
class Alibi(Score):
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class Softcap(Score):
    cap: float
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class RelativeBias(Score):
    buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True
    span: Span | None = _sp()


@dataclass(frozen=True, slots=True)
class BiasInput(Score):
    """``bias(t)``: a float input broadcastable to ``[batch, heads, q_len, k_len]``."""

    input: str
    span: Span | None = _sp()


def children(m: Mask) -> tuple[Mask, ...]:
    if isinstance(m, (And, Or)):
        return m.terms
    if isinstance(m, Not):
        return (m.term,)
    return ()


def walk(m: Mask):
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


def needs_static_lengths(m: Mask) -> bool:
    return any(isinstance(n, Random) for n in walk(m))
