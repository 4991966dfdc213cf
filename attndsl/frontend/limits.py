"""Resource limits of the front ends (documented in ``docs/limits.md``).

Every check here runs before the work it protects: the size limit before the file is read,
the nesting limit before the text reaches a recursive parser, tree builder or mask engine,
the number limit before a literal becomes a Python number.
"""

from __future__ import annotations

import os
import re

from ..errors import LimitError, SpecSyntaxError
from ..source import Source, Span

MAX_SPEC_BYTES = 64 * 1024
"""Default largest spec file, in bytes (64 KiB); raise it with ``ATTNDSL_MAX_SPEC_BYTES``.

The largest spec in the repository is under 1 KiB. The pure-Python YAML reader and the Lark
parser manage a few tens of kilobytes of dense content per second, so 64 KiB keeps the
answer to any spec within a few seconds (docs/limits.md gives the measurements).
"""

SPEC_BYTES_ENV = "ATTNDSL_MAX_SPEC_BYTES"

MAX_NESTING = 64
"""Deepest nesting of YAML collections, and of parentheses and ``~`` in a mask expression.

Fixed: later stages (the Lark tree transformer, ``ir.build``, the mask evaluators and the
lowering) recurse once or more per level, and Python's stack allows about 1000 frames.
"""

MAX_NUMBER_CHARS = 100
"""Longest numeric literal, in characters; fixed (no spec size is anywhere near 10**99)."""


def max_spec_bytes() -> int:
    """The spec size limit: ``ATTNDSL_MAX_SPEC_BYTES`` when set, else ``MAX_SPEC_BYTES``."""
    text = os.environ.get(SPEC_BYTES_ENV, "").strip()
    if not text:
        return MAX_SPEC_BYTES
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise LimitError(f"{SPEC_BYTES_ENV} must be a positive number of bytes, got '{text}'")
    return int(text)


def too_large(path: str, size: int | None, limit: int) -> LimitError:
    """The error for a spec file over the size limit (``size`` None: at least limit + 1)."""
    what = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return LimitError(f"cannot read '{path}': the spec is {what}, over the limit of "
                      f"{limit:,} bytes",
                      hint=f"set {SPEC_BYTES_ENV} to a larger number of bytes to raise it")


# ---------------------------------------------------------------- characters

def spec_text(source: Source) -> Source:
    """``source`` ready for a parser: a leading byte-order mark dropped (columns count from
    after it), and an error at the first NUL character (spec text never holds one, binary
    files do)."""
    if source.text.startswith("\ufeff"):
        source = Source(source.text[1:], source.path)
    at = source.text.find("\x00")
    if at >= 0:
        line, col = source.line_col(at)
        raise SpecSyntaxError("the file contains a NUL byte: it is binary, not spec text",
                              Span(source, line, col), "give a .yaml or .attn text file")
    return source


def _line_col(text: str, index: int) -> tuple[int, int]:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


# ---------------------------------------------------------------- nesting

# What the scan stops at: parentheses, `~`, the operators and separators that end the operand
# of a `~`, and the starts of strings and comments (skipped: their contents do not nest).
_NEST_CHARS = re.compile(r'[()~&|,\n"#]')
_STRING_END = re.compile(r'["\n]')


def _opens_call(text: str, index: int) -> bool:
    """Whether the parenthesis at ``text[index]`` holds a call's arguments: it follows a
    name (perhaps with blanks between) other than the keyword ``mask``."""
    j = index - 1
    while j >= 0 and text[j] in " \t\f":
        j -= 1
    k = j
    while k >= 0 and (text[k].isalnum() or text[k] == "_"):
        k -= 1
    return k < j and text[k + 1:j + 1] != "mask"


def expression_nesting(text: str, span_at) -> LimitError | None:
    """An error where ``text`` nests parentheses and ``~`` deeper than ``MAX_NESTING``.

    The depth at a point is the number of open parentheses plus the ``~`` operators whose
    operand is still being read, over all open levels: a bound on the depth of the tree the
    parser and every later stage builds. ``span_at(line, col)`` places a position of
    ``text`` in the spec. One linear scan, no recursion.
    """
    pending = [0]  # per open parenthesis: `~` operators applied to what is being read
    calls = [False]  # per open parenthesis: whether it holds a call's arguments
    nots = 0  # sum(pending)
    opened = 0  # open parentheses that group an expression (not a call's)
    pos = 0
    while True:
        m = _NEST_CHARS.search(text, pos)
        if m is None:
            return None
        ch, pos = m.group(), m.end()
        if ch == '"':  # a string ends at the next quote or line end
            end = _STRING_END.search(text, pos)
            pos = len(text) if end is None else end.end()
        elif ch == "#":  # a comment ends at the line end
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif ch == ")":
            if len(pending) > 1:
                nots -= pending.pop()
                opened -= not calls.pop()
        elif ch in "(~":
            if ch == "(":  # `name(`: a call's arguments, which hold no expression
                call = _opens_call(text, m.start())
                pending.append(0)
                calls.append(call)
                opened += not call
            else:
                pending[-1] += 1
                nots += 1
            if opened + nots > MAX_NESTING:
                line, col = _line_col(text, m.start())
                return LimitError(
                    f"the expression nests more than {MAX_NESTING} levels of parentheses "
                    "and '~'", span_at(line, col), "write it with fewer levels: '~~x' is "
                    "'x', and '&' and '|' chains need no parentheses")
        elif ch == "\n":  # a statement ends, unless the line ends in a backslash
            j = m.start() - 1
            while j >= 0 and text[j] in " \t\f\r":
                j -= 1
            if j < 0 or text[j] != "\\":
                pending, calls, nots, opened = [0], [False], 0, 0
        else:  # `&`, `|`, `,`: the operand of the pending `~`s is complete
            nots -= pending[-1]
            pending[-1] = 0


# ---------------------------------------------------------------- numbers

def number(text: str, convert, span: Span | None) -> object:
    """``convert(text)``, refusing a literal over ``MAX_NUMBER_CHARS`` before converting it.

    A literal that overflows (``1e309``) becomes ``inf`` and is refused where it is used, by
    the checks that refuse ``.inf`` and ``nan`` there.
    """
    if len(text) > MAX_NUMBER_CHARS:
        raise LimitError(f"a number of {len(text):,} characters is longer than the limit of "
                         f"{MAX_NUMBER_CHARS}", span,
                         "numbers in a spec are sizes, counts and scales: check for a typo")
    return convert(text)
