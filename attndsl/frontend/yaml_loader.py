"""The YAML front end: safe-composed YAML nodes (with positions) -> ``ast.SpecAST``.

Anchors and aliases are refused (a spec writes every value out: nothing to expand, so no
"billion laughs"), and collections nest at most ``limits.MAX_NESTING`` deep; both are
checked while composing, before the next node is built.
"""

from __future__ import annotations

import re

import yaml

from ..errors import (
    AttnDSLError,
    ErrorCollector,
    LimitError,
    SpecError,
    SpecSyntaxError,
    did_you_mean,
)
from ..source import Source, Span
from . import ast, limits
from .expr import Placement, parse_expr

_TAGS = {
    "tag:yaml.org,2002:int": int, "tag:yaml.org,2002:float": float,
    "tag:yaml.org,2002:bool": bool, "tag:yaml.org,2002:null": type(None),
}
_NULL = "tag:yaml.org,2002:null"
_TOP_SCALARS = ("name", "dtype", "seed", "weights")

_EXP_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def _one_line(text: str, comments: bool = False) -> str:
    """``text`` on one line, same length: line breaks (and YAML comments) become spaces."""
    if comments:
        text = re.sub(r"(^|(?<=\s))#[^\n]*", lambda m: " " * len(m.group()), text)
    return text.replace("\r", " ").replace("\n", " ")


def _span(source: Source, node: yaml.Node) -> Span:
    m, e = node.start_mark, node.end_mark
    return Span(source, m.line + 1, m.column + 1, e.column + 1 if e.line == m.line else None)


def _mark_span(source: Source, mark, length: int | None = None) -> Span:
    col = mark.column + 1
    return Span(source, mark.line + 1, col, None if length is None else col + length)


class _Written:
    """A YAML list or mapping where a scalar belongs: messages show it as written, cut short."""

    __slots__ = ("text",)

    def __init__(self, source: Source, node: yaml.Node):
        text = " ".join(source.text[node.start_mark.index:node.end_mark.index].split())
        self.text = text if len(text) <= 40 else text[:37] + "..."

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


class _Composer(yaml.SafeLoader):
    """PyYAML's safe composer, refusing anchors, aliases and nesting over the limit."""

    def __init__(self, source: Source):
        super().__init__(source.text)
        self.source = source
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            alias = isinstance(event, yaml.AliasEvent)
            written = ("*" if alias else "&") + anchor
            raise SpecSyntaxError(
                f"YAML {'aliases' if alias else 'anchors'} are not supported: '{written}'",
                _mark_span(self.source, event.start_mark, len(written)),
                "write the value out where it is used (a spec repeats values, it does not "
                "share them)")
        if self.depth >= limits.MAX_NESTING:
            raise LimitError(f"the YAML nests more than {limits.MAX_NESTING} levels deep",
                             _mark_span(self.source, event.start_mark),
                             "a spec nests four or five levels: check the brackets")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml_error(source: Source, err: yaml.MarkedYAMLError) -> SpecSyntaxError:
    mark = err.problem_mark or err.context_mark
    span = _mark_span(source, mark) if mark else None
    problem = err.problem or err.context
    hint = None
    if "'\\t'" in str(problem):
        hint = ("YAML does not allow tabs for indentation or after a key's ':'; use spaces "
                "(.attn files accept tabs)")
    return SpecSyntaxError(f"invalid YAML: {problem}", span, hint)


def _compose(source: Source) -> yaml.Node | None:
    """The root node of the YAML document, or None for an empty one."""
    try:
        loader = _Composer(source)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(source, err) from None
    except yaml.reader.ReaderError as err:  # a control character; position is an index
        line, col = source.line_col(err.position)
        raise SpecSyntaxError(f"invalid YAML: character {err.character:#06x} is not "
                              "allowed", Span(source, line, col)) from None


class _Loader:
    def __init__(self, source: Source):
        self.source = source
        self.errors = ErrorCollector()
        self._construct = yaml.SafeLoader("")

    def sp(self, node: yaml.Node) -> Span:
        return _span(self.source, node)

    # ------------------------------------------------------------ values
    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return _Written(self.source, node)
        kind = _TAGS.get(node.tag)
        if kind is None:
            if node.style is None and _EXP_FLOAT.fullmatch(node.value):
                # `1e-5`, `5e5`: floats in YAML 1.2 and Python
                return limits.number(node.value, float, self.sp(node))
            return node.value
        if kind in (int, float):
            return limits.number(node.value, lambda _: self.construct(node), self.sp(node))
        return self.construct(node)

    def construct(self, node: yaml.ScalarNode) -> object:
        try:
            return self._construct.construct_object(node, deep=True)
        except ValueError:  # an int of more than 4300 digits
            return node.value

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, Span]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
            return []
        if not isinstance(node, yaml.MappingNode):
            self.errors.error(f"{what} must be a mapping", self.sp(node))
            return []
        seen: dict[str, Span] = {}
        out = []
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.errors.error(f"a key in {what} must be a name", self.sp(k))
                continue
            key = k.value  # as written: `on:` or `null:` name things, they are not bools
            if key in seen:
                self.errors.error(f"duplicate key '{key}' in {what}", self.sp(k),
                                  f"first given at line {seen[key].line}")
                continue
            seen[key] = self.sp(k)
            out.append((key, v, self.sp(k)))
        return out

    def expr(self, node: yaml.Node, start: str):
        text = str(node.value)
        m = node.start_mark
        quoted = 1 if node.style in ('"', "'") else 0
        raw = self.source.text[m.index + quoted:node.end_mark.index - quoted]
        if node.style in (None, '"', "'") and raw.split() == text.split():
            # the file's own characters: positions stay right across folded lines
            return parse_expr(_one_line(raw), Placement(self.source, index=m.index + quoted),
                              start)
        place = Placement(self.source, m.line + 1, m.column + 1 + quoted)
        return parse_expr(text, place, start)

    # ------------------------------------------------------------ block settings
    def setting_value(self, key: str, node: yaml.Node) -> object:
        if key == "mask":
            return self.mask_value(node)
        if key == "score":
            return self.score_value(node)
        if isinstance(node, yaml.MappingNode):  # a block feature's options: `rope: {theta: 1e6}`
            return self.feature_value(node, key)
        value = self.scalar(node)
        # `rope:` with no value is the key alone, as a bare `rope` line in .attn: true
        return True if value is None else value

    def mask_value(self, node: yaml.Node) -> object:
        if isinstance(node, yaml.ScalarNode):
            return self.expr(node, "mask_expr")
        self.errors.error("mask must be a string (a mask expression)", self.sp(node))
        return None

    def score_value(self, node: yaml.Node) -> tuple[ast.Call, ...]:
        if isinstance(node, yaml.SequenceNode) and node.flow_style and all(
                isinstance(i, yaml.ScalarNode) and i.style is None for i in node.value):
            # `[softcap(30.0), relative_bias(buckets=8, max_distance=16)]`: YAML would split
            # at the commas inside the parentheses, so parse the raw text between brackets
            # (unless an item is quoted: then the items are the modifiers).
            start, end = node.start_mark, node.end_mark
            text = _one_line(self.source.text[start.index + 1:end.index - 1], comments=True)
            if not text.strip():
                return ()
            place = Placement(self.source, index=start.index + 1)
            return tuple(parse_expr(text, place, "score_list"))
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        mods: list[ast.Call] = []
        for item in items:
            if not isinstance(item, yaml.ScalarNode):
                self.errors.error("score modifiers are strings like 'softcap(30.0)'",
                                  self.sp(item))
                continue
            if item.tag == _NULL:
                continue
            mods.extend(self.expr(item, "score_list"))
        return tuple(mods)

    def feature_value(self, node: yaml.MappingNode, key: str) -> tuple[ast.Setting, ...]:
        """A block feature's options (any key: the IR builder knows the features)."""
        return tuple(ast.Setting(k, self.scalar(v), ks, self.sp(v))
                     for k, v, ks in self.mapping(node, key))

    # ------------------------------------------------------------ sections
    def dim_decls(self, node: yaml.Node) -> list[ast.DimDecl]:
        return [ast.DimDecl(name, self.scalar(v), s) for name, v, s in self.mapping(node, "dims")]

    def input_decls(self, node: yaml.Node) -> list[ast.InputDecl]:
        return [self.input_decl(name, v, s) for name, v, s in self.mapping(node, "inputs")]

    def block_decls(self, node: yaml.Node) -> list[ast.BlockDecl]:
        return [self.block_decl(name, v, s) for name, v, s in self.mapping(node, "blocks")]

    def output_decls(self, node: yaml.Node) -> list[ast.OutputDecl]:
        outputs = []
        for name, v, s in self.mapping(node, "outputs"):
            stream, _, attr = str(self.scalar(v)).partition(".")
            outputs.append(ast.OutputDecl(name, stream, attr or None, s))
        return outputs

    def block_decl(self, name: str, node: yaml.Node, span: Span) -> ast.BlockDecl:
        settings = []
        for k, v, ks in self.mapping(node, f"block '{name}'"):
            try:
                settings.append(ast.Setting(k, self.setting_value(k, v), ks, self.sp(v)))
            except AttnDSLError as err:
                self.errors.add(err)
        return ast.BlockDecl(name, tuple(settings), "attention", span)

    def input_decl(self, name: str, node: yaml.Node, span: Span) -> ast.InputDecl:
        dtype, dtype_span = None, None
        shape_node = node
        if isinstance(node, yaml.MappingNode):
            shape_node = None
            for k, v, ks in self.mapping(node, f"input '{name}'"):
                if k == "shape":
                    shape_node = v
                elif k == "dtype":
                    dtype, dtype_span = str(self.scalar(v)), self.sp(v)
                else:
                    self.errors.error(f"unknown key '{k}' in input '{name}'", ks,
                                      did_you_mean(k, ("shape", "dtype")))
        if not isinstance(shape_node, yaml.SequenceNode):
            self.errors.error(f"input '{name}' needs a shape list like [batch, seq, d_model]",
                              self.sp(shape_node) if shape_node is not None else span)
            return ast.InputDecl(name, (), dtype, span, dtype_span)
        return ast.InputDecl(name, self.shape(shape_node), dtype, span, dtype_span)

    def shape(self, node: yaml.SequenceNode) -> tuple[ast.ShapeEntry, ...]:
        entries = []
        for e in node.value:
            value = self.scalar(e)
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.errors.error("a shape entry is a dim name or an integer", self.sp(e))
                continue
            entries.append(ast.ShapeEntry(value, self.sp(e)))
        return tuple(entries)

    # ------------------------------------------------------------ the document
    def root(self) -> yaml.MappingNode:
        root = _compose(self.source)
        if root is None:
            raise SpecSyntaxError("the spec is empty", Span(self.source, 1, 1),
                                  "a spec starts with 'attndsl: 1'")
        if not isinstance(root, yaml.MappingNode):
            raise SpecError("the spec must be a mapping of keys like 'attndsl: 1'", self.sp(root))
        return root

    def load(self) -> ast.SpecAST:
        sections = {"dims": self.dim_decls, "inputs": self.input_decls,
                    "blocks": self.block_decls, "outputs": self.output_decls}
        found: dict[str, list] = {key: [] for key in sections}
        version = None
        top: list[ast.Setting] = []
        extra: list[ast.Setting] = []
        for key, node, kspan in self.mapping(self.root(), "the spec"):
            if key in sections:
                found[key] = sections[key](node)
            elif key == "attndsl" or key in _TOP_SCALARS:
                setting = ast.Setting(key, self.scalar(node), kspan, self.sp(node))
                if key == "attndsl":
                    version = setting
                else:
                    top.append(setting)
            else:
                extra.append(ast.Setting(key, None, kspan))
        if version is None:
            version = ast.Setting("attndsl", None, Span(self.source, 1, 1))
        return ast.SpecAST(version, tuple(top), tuple(found["dims"]), tuple(found["inputs"]),
                           tuple(found["blocks"]), tuple(found["outputs"]), tuple(extra),
                           source=self.source, errors=tuple(self.errors.errors))


def parse_yaml(source: Source) -> ast.SpecAST:
    """Parse YAML spec text into the shared AST."""
    return _Loader(limits.spec_text(source)).load()
