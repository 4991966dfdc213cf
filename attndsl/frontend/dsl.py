"""The `.attn` front end: Lark parse tree -> ``ast.SpecAST``."""

from __future__ import annotations

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from ..source import Source
from . import ast
from .expr import ExprBuilder, Placement, parser, syntax_error


def _scalar(node: object) -> object:
    """A setting value from the DSL: numbers, true/false, names and strings."""
    if isinstance(node, ast.Num):
        return node.value
    if isinstance(node, ast.Name):
        return {"true": True, "false": False}.get(node.name, node.name)
    if isinstance(node, ast.Str):
        return node.value
    return node


def _num(tok: Token) -> int | float | str:
    text = str(tok)
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


class _Builder:
    def __init__(self, source: Source):
        self.place = Placement(source)
        self.expr = ExprBuilder(self.place)

    def sp(self, item):
        return self.place.of(item)

    def build(self, tree: Tree) -> ast.SpecAST:
        header, *stmts = tree.children
        version = ast.Setting("attndsl", _num(header.children[0]), self.sp(header),
                              self.sp(header.children[0]))
        top: list[ast.Setting] = []
        dims: list[ast.DimDecl] = []
        inputs: list[ast.InputDecl] = []
        blocks: list[ast.BlockDecl] = []
        outputs: list[ast.OutputDecl] = []
        for st in stmts:
            kind = st.data
            if kind in ("model_stmt", "dtype_stmt", "seed_stmt", "weights_stmt"):
                key = {"model_stmt": "name", "dtype_stmt": "dtype", "seed_stmt": "seed",
                       "weights_stmt": "weights"}[kind]
                tok = st.children[0]
                value = str(tok)[1:-1] if tok.type == "STRING" else (
                    _num(tok) if tok.type == "NUMBER" else str(tok))
                top.append(ast.Setting(key, value, self.sp(st), self.sp(tok)))
            elif kind == "dims_stmt":
                for d in st.children:
                    name, value = d.children
                    dims.append(ast.DimDecl(str(name), _num(value) if value.type == "NUMBER"
                                            else str(value), self.sp(d)))
            elif kind == "input_stmt":
                name, dtype, shape = st.children
                entries = tuple(
                    ast.ShapeEntry(_num(e) if e.type == "NUMBER" else str(e), self.sp(e))
                    for e in shape.children if e is not None)
                inputs.append(ast.InputDecl(
                    str(name), entries, None if dtype is None else str(dtype), self.sp(name),
                    None if dtype is None else self.sp(dtype)))
            elif kind == "block_stmt":
                blocks.append(self.block(st))
            elif kind == "output_stmt":
                name, ref = st.children
                parts = [str(c) for c in ref.children if c is not None]
                outputs.append(ast.OutputDecl(
                    str(name), parts[0], parts[1] if len(parts) > 1 else None, self.sp(name)))
        return ast.SpecAST(version, tuple(top), tuple(dims), tuple(inputs), tuple(blocks),
                           tuple(outputs), source=self.place.source)

    def kwarg(self, kw: Tree) -> ast.Setting:
        key, value = kw.children
        if isinstance(value, Tree) and value.data == "number_list":  # `[1.0, 1.1]`: a list
            return ast.Setting(str(key), [_num(t) for t in value.children if t is not None],
                               self.sp(key), self.sp(value))
        value_ast = self.expr.transform(value) if isinstance(value, Tree) else value
        return ast.Setting(str(key), _scalar(value_ast), self.sp(key),
                           getattr(value_ast, "span", None))

    def block(self, st: Tree) -> ast.BlockDecl:
        name, kind, *rest = st.children
        settings: list[ast.Setting] = []
        for item in rest:
            if item is None:
                continue
            if item.data == "kwarg":
                settings.append(self.kwarg(item))
            elif item.data == "mask_line":
                expr = self.expr.transform(item.children[0])
                settings.append(ast.Setting("mask", expr, self.sp(item),
                                            getattr(expr, "span", None)))
            elif item.data == "score_line":
                mods = item.children[0]
                mods = () if mods is None else self.expr.transform(mods)
                settings.append(ast.Setting("score", mods, self.sp(item),
                                            self.sp(item.children[0] or item)))
            elif item.data == "feature_line":  # `rope theta = 1e6, dim = 8`: a mapping
                key, *kwargs = item.children
                kws = tuple(self.kwarg(k) for k in kwargs if k is not None)
                settings.append(ast.Setting(str(key), kws, self.sp(key), self.sp(item)))
            elif item.data in ("setting_line", "setting"):
                for s in ([item] if item.data == "setting" else item.children):
                    key, value = s.children
                    if value is None:
                        settings.append(ast.Setting(str(key), True, self.sp(key), self.sp(key)))
                    else:
                        v = self.expr.transform(value) if isinstance(value, Tree) else value
                        settings.append(ast.Setting(str(key), _scalar(v), self.sp(key),
                                                    getattr(v, "span", None)))
        return ast.BlockDecl(str(name), tuple(settings), str(kind), self.sp(name))


def parse_dsl(source: Source) -> ast.SpecAST:
    """Parse `.attn` text into the shared AST (syntax errors raise SpecSyntaxError)."""
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    place = Placement(source)
    try:
        tree = parser().parse(text, start="module")
    except UnexpectedInput as err:
        raise syntax_error(err, place, "spec") from None
    return _Builder(source).build(tree)
