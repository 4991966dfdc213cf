"""The one parser: Lark grammar loading and the tree -> AST transformer for both syntaxes."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, VisitError
from lark.lexer import PatternStr

from ..errors import SpecSyntaxError, did_you_mean
from ..source import Source, Span
from . import ast, limits

_TOKEN_NAMES = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a quoted string", "_NL": "a new line",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "DOT": "'.'",
    "AMPERSAND": "'&'", "VBAR": "'|'", "TILDE": "'~'", "$END": "end of input",
}


@cache
def parser() -> Lark:
    # a source checkout's own grammar first: an editable install elsewhere would otherwise
    # map `attndsl.grammars` to that other tree's grammar
    local = Path(__file__).resolve().parents[2] / "grammars" / "attn.lark"
    if local.is_file():
        text = local.read_text("utf-8")
    else:  # installed: grammars/ is shipped as the package data `attndsl.grammars`
        text = resources.files("attndsl.grammars").joinpath("attn.lark").read_text("utf-8")
    return Lark(
        text, start=["module", "mask_expr", "score_list"], parser="lalr",
        propagate_positions=True, maybe_placeholders=True,
    )


class Placement:
    """Maps positions inside parsed text to positions in the spec's Source.

    For a ``.attn`` file the parsed text is the source itself. A YAML string is either parsed
    from the file's own characters starting at ``index`` (line breaks turned into spaces, so
    column c of the one-line text is character ``index + c - 1`` of the file, whatever line
    it is on), or, when its value differs from its text (escapes), from its value placed at
    (line, col) of the file.
    """

    def __init__(self, source: Source, line: int = 1, col: int = 1, index: int | None = None):
        self.source, self.line, self.col, self.index = source, line, col, index

    def span(self, line: int, col: int, end_col: int | None = None) -> Span:
        if self.index is not None:
            at_line, at_col = self.source.line_col(self.index + col - 1)
            end = None
            if end_col is not None:
                end_line, end = self.source.line_col(self.index + end_col - 1)
                end = end if end_line == at_line else None
            return Span(self.source, at_line, at_col, end)
        if line == 1:
            shift = self.col - 1
            return Span(self.source, self.line, col + shift,
                        None if end_col is None else end_col + shift)
        return Span(self.source, self.line + line - 1, col, end_col)

    def of(self, item: Token | Tree) -> Span | None:
        if isinstance(item, Token):
            if item.line is None:
                return None
            end = item.end_column if item.end_line == item.line else None
            return self.span(item.line, item.column, end)
        meta = item.meta
        if getattr(meta, "empty", True):
            return None
        end = meta.end_column if meta.end_line == meta.line else None
        return self.span(meta.line, meta.column, end)


def number_value(text: str) -> int | float:
    """The value of a NUMBER token: an int when it is written as one, else a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _number(tok: Token, place: Placement) -> ast.Num:
    text = str(tok)
    span = place.of(tok)
    return ast.Num(limits.number(text, number_value, span), text, span)


@v_args(tree=True)
class ExprBuilder(Transformer):
    """Lark tree of an expression -> ``ast`` nodes with spans."""

    def __init__(self, place: Placement):
        super().__init__()
        self.place = place

    def build(self, tree: Tree):
        """``transform(tree)``, raising what a callback raised (an attndsl error) itself."""
        try:
            return self.transform(tree)
        except VisitError as err:  # Lark wraps what a callback raises
            raise err.orig_exc from None

    def number(self, t: Tree) -> ast.Num:
        return _number(t.children[0], self.place)

    def name(self, t: Tree) -> ast.Name:
        return ast.Name(str(t.children[0]), self.place.of(t.children[0]))

    def string(self, t: Tree) -> ast.Str:
        return ast.Str(str(t.children[0])[1:-1], self.place.of(t.children[0]))

    def range(self, t: Tree) -> ast.Range:
        lo, hi = (_number(c, self.place) for c in t.children)
        return ast.Range(lo, hi, self.place.of(t))

    def kwarg(self, t: Tree) -> ast.KwArg:
        key, value = t.children
        return ast.KwArg(str(key), value, self.place.of(t))

    def call(self, t: Tree) -> ast.Call:
        name, *args = t.children
        return ast.Call(str(name), tuple(a for a in args if a is not None), self.place.of(t))

    def bare(self, t: Tree) -> ast.Call:
        tok = t.children[0]
        return ast.Call(str(tok), (), self.place.of(tok), bare=True)

    def not_(self, t: Tree) -> ast.Not:
        return ast.Not(t.children[0], self.place.of(t))

    def and_expr(self, t: Tree) -> ast.And:
        return ast.And(tuple(t.children), self.place.of(t))

    def or_expr(self, t: Tree) -> ast.Or:
        return ast.Or(tuple(t.children), self.place.of(t))

    def score_list(self, t: Tree) -> tuple[ast.Call, ...]:
        return tuple(t.children)


def _token_name(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    try:
        pattern = parser().get_terminal(name).pattern
    except KeyError:
        return name
    return repr(pattern.value) if isinstance(pattern, PatternStr) else name.lower()


def syntax_error(err: UnexpectedInput, place: Placement, what: str) -> SpecSyntaxError:
    """A Lark failure as a SpecSyntaxError with position, found text and expectations."""
    line, col = getattr(err, "line", 1) or 1, getattr(err, "column", 1) or 1
    tok = None
    if isinstance(err, UnexpectedCharacters):
        found = repr(err.char)
        expected = set(err.allowed or ())
    elif isinstance(err, UnexpectedEOF):
        found = "end of input"
        expected = set(err.expected or ())
    else:
        tok = getattr(err, "token", None)
        found = "end of input" if tok is None or tok.type == "$END" else (
            "end of line" if tok.type == "_NL" else repr(str(tok)))
        # `accepts` is exact (each token tried); `expected` is the LALR state's, shared
        # between the .attn file and the expressions in YAML strings
        expected = set(getattr(err, "accepts", None) or getattr(err, "expected", None) or ())
        if tok is not None and tok.type != "$END" and tok.line is not None:
            line, col = tok.line, tok.column
    if what != "spec":  # an expression in a YAML string: no lines, no braces
        expected -= {"_NL", "RBRACE"}
    names = sorted({_token_name(e) for e in expected})
    hint = None
    if names:
        hint = "expected " + (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1
                              else names[0])
    if tok is not None and tok.type == "NAME":  # a misspelt keyword: `modle x`
        words = [n.strip("'") for n in names if n.strip("'").isalpha()]
        close = did_you_mean(str(tok), words)
        if close:
            hint = f"{hint}; {close}" if hint else close
    return SpecSyntaxError(f"unexpected {found} in {what}", place.span(line, col), hint)


def parse_expr(text: str, place: Placement, start: str = "mask_expr"):
    """Parse a mask expression (``mask_expr``) or a score list (``score_list``)."""
    what = "mask expression" if start == "mask_expr" else "score modifiers"
    if "#" in text:  # not a comment inside a YAML string: `causal#x` is one word there
        at = text.index("#") + 1
        raise SpecSyntaxError(f"unexpected '#' in {what}", place.span(1, at),
                              "comments cannot start inside an expression")
    deep = limits.expression_nesting(text, place.span)
    if deep is not None:
        raise deep
    try:
        tree = parser().parse(text, start=start)
    except UnexpectedInput as err:
        raise syntax_error(err, place, what) from None
    return ExprBuilder(place).build(tree)
