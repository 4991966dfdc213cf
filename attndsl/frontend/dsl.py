"""The `.attn` front end: Lark parse tree -> ``ast.SpecAST``."""

from __future__ import annotations

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from ..source import Source
from . import ast, limits
from .expr import ExprBuilder, Placement, number_value, parser, syntax_error

_TOP_STMTS = {"model_stmt": "name", "dtype_stmt": "dtype", "seed_stmt": "seed",
              "weights_stmt": "weights"}


def _scalar(node: object) -> object:
    """A setting value from the DSL: numbers, true/false, names and strings."""
    if isinstance(node, ast.Num):
        return node.value
    if isinstance(node, ast.Name):
        return {"true": True, "false": False}.get(node.name, node.name)
    if isinstance(node, ast.Str):
        return node.value
    return node


class _Builder:
    def __init__(self, source: Source):
        self.place = Placement(source)
        self.expr = ExprBuilder(self.place)

    def sp(self, item):
        return self.place.of(item)

    def num(self, tok: Token) -> int | float:
        return limits.number(str(tok), number_value, self.sp(tok))

    def num_or_name(self, tok: Token) -> int | float | str:
        return self.num(tok) if tok.type == "NUMBER" else str(tok)

    def value(self, tree_or_token):
        """A setting value: an expression tree built into ``ast`` nodes, a token as is."""
        return self.expr.build(tree_or_token) if isinstance(tree_or_token, Tree) \
            else tree_or_token

    # ------------------------------------------------------------ statements
    def build(self, tree: Tree) -> ast.SpecAST:
        header, *stmts = tree.children
        version = ast.Setting("attndsl", self.num(header.children[0]), self.sp(header),
                              self.sp(header.children[0]))
        top: list[ast.Setting] = []
        dims: list[ast.DimDecl] = []
        inputs: list[ast.InputDecl] = []
        blocks: list[ast.BlockDecl] = []
        outputs: list[ast.OutputDecl] = []
        for st in stmts:
            kind = st.data
            if kind in _TOP_STMTS:
                top.append(self.top_setting(st))
            elif kind == "dims_stmt":
                dims.extend(ast.DimDecl(str(d.children[0]), self.num_or_name(d.children[1]),
                                        self.sp(d)) for d in st.children)
            elif kind == "input_stmt":
                inputs.append(self.input_decl(st))
            elif kind == "block_stmt":
                blocks.append(self.block(st))
            elif kind == "output_stmt":
                outputs.append(self.output_decl(st))
        return ast.SpecAST(version, tuple(top), tuple(dims), tuple(inputs), tuple(blocks),
                           tuple(outputs), source=self.place.source)

    def top_setting(self, st: Tree) -> ast.Setting:
        tok = st.children[0]
        value = str(tok)[1:-1] if tok.type == "STRING" else self.num_or_name(tok)
        return ast.Setting(_TOP_STMTS[st.data], value, self.sp(st), self.sp(tok))

    def input_decl(self, st: Tree) -> ast.InputDecl:
        name, dtype, shape = st.children
        entries = tuple(ast.ShapeEntry(self.num_or_name(e), self.sp(e))
                        for e in shape.children if e is not None)
        return ast.InputDecl(str(name), entries, None if dtype is None else str(dtype),
                             self.sp(name), None if dtype is None else self.sp(dtype))

    def output_decl(self, st: Tree) -> ast.OutputDecl:
        name, ref = st.children
        parts = [str(c) for c in ref.children if c is not None]
        return ast.OutputDecl(str(name), parts[0], parts[1] if len(parts) > 1 else None,
                              self.sp(name))

    # ------------------------------------------------------------ block lines
    def kwarg(self, kw: Tree) -> ast.Setting:
        key, value = kw.children
        value_ast = self.value(value)
        return ast.Setting(str(key), _scalar(value_ast), self.sp(key),
                           getattr(value_ast, "span", None))

    def block(self, st: Tree) -> ast.BlockDecl:
        name, kind, *rest = st.children
        settings: list[ast.Setting] = []
        for item in rest:
            if item is not None:
                settings.extend(getattr(self, f"line_{item.data}")(item))
        return ast.BlockDecl(str(name), tuple(settings), str(kind), self.sp(name))

    def line_kwarg(self, item: Tree) -> list[ast.Setting]:
        return [self.kwarg(item)]

    def line_mask_line(self, item: Tree) -> list[ast.Setting]:
        expr = self.expr.build(item.children[0])
        return [ast.Setting("mask", expr, self.sp(item), getattr(expr, "span", None))]

    def line_score_line(self, item: Tree) -> list[ast.Setting]:
        mods = item.children[0]
        mods = () if mods is None else self.expr.build(mods)
        return [ast.Setting("score", mods, self.sp(item), self.sp(item.children[0] or item))]

    def line_feature_line(self, item: Tree) -> list[ast.Setting]:
        """A block feature's options, ``rope theta = 1e6, dim = 8``: a mapping."""
        key, *kwargs = item.children
        kws = tuple(self.kwarg(k) for k in kwargs if k is not None)
        return [ast.Setting(str(key), kws, self.sp(key), self.sp(item))]

    def line_setting_line(self, item: Tree) -> list[ast.Setting]:
        return [self.setting(s) for s in item.children]

    def line_setting(self, item: Tree) -> list[ast.Setting]:
        return [self.setting(item)]

    def setting(self, s: Tree) -> ast.Setting:
        key, value = s.children
        if value is None:  # a bare flag: `bias`
            return ast.Setting(str(key), True, self.sp(key), self.sp(key))
        v = self.value(value)
        return ast.Setting(str(key), _scalar(v), self.sp(key), getattr(v, "span", None))


def parse_dsl(source: Source) -> ast.SpecAST:
    """Parse `.attn` text into the shared AST (syntax errors raise SpecSyntaxError)."""
    source = limits.spec_text(source)
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    place = Placement(source)
    deep = limits.expression_nesting(text, place.span)
    if deep is not None:
        raise deep
    try:
        tree = parser().parse(text, start="module")
    except UnexpectedInput as err:
        raise syntax_error(err, place, "spec") from None
    return _Builder(source).build(tree)
