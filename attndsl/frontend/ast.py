"""The syntax tree both front ends produce: what the user wrote, with positions.

Names are not resolved and defaults are not filled in here; ``ir.build`` does that.
Every node keeps a ``span`` that is excluded from equality, so two syntaxes that say the
same thing give equal trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..source import Span

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Num:
    """A numeric literal; ``text`` keeps the spelling (``30.0`` vs ``30``)."""

    value: int | float
    text: str = field(default="", compare=False)
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier: a primitive without arguments, an input name, ``true``/``false``."""

    name: str
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Range:
    """``a..b``, inclusive."""

    lo: Num
    hi: Num
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class KwArg:
    name: str
    value: Num | Name | Str
    span: Span | None = field(default=None, compare=False)


Arg = Num | Name | Str | Range | KwArg


@dataclass(frozen=True, slots=True)
class Call:
    """``name(args...)``; a bare name in a mask or score position is a Call with no args."""

    name: str
    args: tuple[Arg, ...] = ()
    span: Span | None = field(default=None, compare=False)
    bare: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    span: Span | None = field(default=None, compare=False)


Expr = Call | Not | And | Or

# ---------------------------------------------------------------- spec structure



@dataclass(frozen=True, slots=True)
class Setting:
    """One ``key: value`` of a block (or of ``rope``): value is a scalar, an Expr, or a tuple."""

    key: str
    value: object
    span: Span | None = field(default=None, compare=False)
    value_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DimDecl:
    name: str
    value: int | str  # an int, or "dynamic"
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ShapeEntry:
    value: int | str
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class InputDecl:
    name: str
    shape: tuple[ShapeEntry, ...]
    dtype: str | None = None
    span: Span | None = field(default=None, compare=False)
    dtype_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BlockDecl:
    name: str
    settings: tuple[Setting, ...]
    kind: str = "attention"
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OutputDecl:
    name: str
    stream: str
    attr: str | None = None  # "weights" for `<block>.weights`
    span: Span | None = field(default=None, compare=False)


# the top-level keys of a spec (both syntaxes); the front ends put others in ``SpecAST.extra``
TOP_KEYS = ("attndsl", "name", "dtype", "seed", "weights", "dims", "inputs", "blocks", "outputs")


@dataclass(frozen=True, slots=True)
class SpecAST:
    """A whole spec. ``top`` holds the top-level scalar settings (name, dtype, seed, weights)."""

    version: Setting
    top: tuple[Setting, ...]
    dims: tuple[DimDecl, ...]
    inputs: tuple[InputDecl, ...]
    blocks: tuple[BlockDecl, ...]
    outputs: tuple[OutputDecl, ...]
    extra: tuple[Setting, ...] = ()  # unknown top-level keys, reported by the builder
    errors: tuple = field(default=(), compare=False)  # front-end errors to report with the rest
    source: object = field(default=None, compare=False)
