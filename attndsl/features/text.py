"""Canonical text of mask expressions and score modifiers, in the one expression syntax
(the IR printer, summaries, pictures and explanations print through here)."""

from __future__ import annotations

from .base import And, Mask, Not, Or
from .registry import rule


def format_mask(m: Mask, parent: int = 0) -> str:
    """Canonical text of a mask (precedence: ~ > & > |; parentheses only where needed)."""
    if isinstance(m, Or):
        s = " | ".join(format_mask(t, 1) for t in m.terms)
        return f"({s})" if parent > 1 else s
    if isinstance(m, And):
        s = " & ".join(format_mask(t, 2) for t in m.terms)
        return f"({s})" if parent > 2 else s
    if isinstance(m, Not):
        return "~" + format_mask(m.term, 3)
    return format_leaf(m)


def format_leaf(m: object) -> str:
    """Text of one primitive call or score modifier."""
    return rule("format", m)(m)
