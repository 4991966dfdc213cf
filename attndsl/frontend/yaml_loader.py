"""The YAML front end: safe-composed YAML nodes (with positions) -> ``ast.SpecAST``."""

from __future__ import annotations

import re

import yaml

from ..errors import AttnDSLError, ErrorCollector, SpecError, SpecSyntaxError, did_you_mean
from ..source import Source, Span
from . import ast
from .expr import Placement, parse_expr

_TAGS = {
    "tag:yaml.org,2002:int": int, "tag:yaml.org,2002:float": float,
    "tag:yaml.org,2002:bool": bool, "tag:yaml.org,2002:null": type(None),
}

_EXP_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+")


def _one_line(text: str, comments: bool = False) -> str:
    """``text`` on one line, same length: line breaks (and YAML comments) become spaces."""
    if comments:
        text = re.sub(r"(^|(?<=\s))#[^\n]*", lambda m: " " * len(m.group()), text)
    return text.replace("\r", " ").replace("\n", " ")


def _span(source: Source, node: yaml.Node) -> Span:
    m, e = node.start_mark, node.end_mark
    return Span(source, m.line + 1, m.column + 1, e.column + 1 if e.line == m.line else None)


class _Loader:
    def __init__(self, source: Source):
        self.source = source
        self.errors = ErrorCollector()
        self._construct = yaml.SafeLoader("")

    def sp(self, node: yaml.Node) -> Span:
        return _span(self.source, node)

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return node
        kind = _TAGS.get(node.tag)
        if kind is None:
            if node.style is None and _EXP_FLOAT.fullmatch(node.value):
                return float(node.value)  # `1e-5`, `5e5`: floats in YAML 1.2 and Python
            return node.value
        try:
            return self._construct.construct_object(node, deep=True)
        except ValueError:  # an int of more than 4300 digits
            return node.value

    def option_value(self, node: yaml.Node) -> object:
        """A block feature option: a scalar, or a list of scalars (``[1.0, 1.1]``) as a
        Python list; anything else stays the YAML node (the builder reports it)."""
        if isinstance(node, yaml.SequenceNode) and all(
                isinstance(i, yaml.ScalarNode) for i in node.value):
            return [self.scalar(i) for i in node.value]
        return self.scalar(node)

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, Span]]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
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

    def setting_value(self, key: str, node: yaml.Node) -> object:
        if key == "mask":
            if isinstance(node, yaml.ScalarNode):
                return self.expr(node, "mask_expr")
            self.errors.error("mask must be a string (a mask expression)", self.sp(node))
            return None
        if key == "score":
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
                if item.tag == "tag:yaml.org,2002:null":
                    continue
                mods.extend(self.expr(item, "score_list"))
            return tuple(mods)
        if isinstance(node, yaml.MappingNode):  # a block feature's options: `rope: {theta: 1e6}`
            return tuple(ast.Setting(k, self.option_value(v), ks, self.sp(v))
                         for k, v, ks in self.mapping(node, key))
        value = self.scalar(node)
        # `rope:` with no value is the key alone, as a bare `rope` line in .attn: true
        return True if value is None else value

    def load(self) -> ast.SpecAST:
        try:
            root = yaml.compose(self.source.text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            span = Span(self.source, mark.line + 1, mark.column + 1) if mark else None
            raise SpecSyntaxError(f"invalid YAML: {err.problem or err.context}", span) from None
        except yaml.reader.ReaderError as err:  # a control character; position is an index
            before = self.source.text[:err.position]
            span = Span(self.source, before.count("\n") + 1,
                        err.position - (before.rfind("\n") + 1) + 1)
            raise SpecSyntaxError(f"invalid YAML: character {err.character:#06x} is not "
                                  "allowed", span) from None
        if root is None:
            raise SpecSyntaxError("the spec is empty", Span(self.source, 1, 1),
                                  "a spec starts with 'attndsl: 1'")
        if not isinstance(root, yaml.MappingNode):
            raise SpecError("the spec must be a mapping of keys like 'attndsl: 1'", self.sp(root))
        version = None
        top: list[ast.Setting] = []
        extra: list[ast.Setting] = []
        dims: list[ast.DimDecl] = []
        inputs: list[ast.InputDecl] = []
        blocks: list[ast.BlockDecl] = []
        outputs: list[ast.OutputDecl] = []
        for key, node, kspan in self.mapping(root, "the spec"):
            if key == "attndsl":
                version = ast.Setting(key, self.scalar(node), kspan, self.sp(node))
            elif key in ("name", "dtype", "seed", "weights"):
                top.append(ast.Setting(key, self.scalar(node), kspan, self.sp(node)))
            elif key == "dims":
                for name, v, s in self.mapping(node, "dims"):
                    dims.append(ast.DimDecl(name, self.scalar(v), s))
            elif key == "inputs":
                for name, v, s in self.mapping(node, "inputs"):
                    inputs.append(self.input_decl(name, v, s))
            elif key == "blocks":
                for name, v, s in self.mapping(node, "blocks"):
                    settings = []
                    for k, vv, ks in self.mapping(v, f"block '{name}'"):
                        try:
                            value = self.setting_value(k, vv)
                            settings.append(ast.Setting(k, value, ks, self.sp(vv)))
                        except AttnDSLError as err:
                            self.errors.add(err)
                    blocks.append(ast.BlockDecl(name, tuple(settings), "attention", s))
            elif key == "outputs":
                for name, v, s in self.mapping(node, "outputs"):
                    ref = str(self.scalar(v))
                    stream, _, attr = ref.partition(".")
                    outputs.append(ast.OutputDecl(name, stream, attr or None, s))
            else:
                extra.append(ast.Setting(key, None, kspan))
        if version is None:
            version = ast.Setting("attndsl", None, Span(self.source, 1, 1))
        return ast.SpecAST(version, tuple(top), tuple(dims), tuple(inputs), tuple(blocks),
                           tuple(outputs), tuple(extra), source=self.source,
                           errors=tuple(self.errors.errors))

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
        entries = []
        for e in shape_node.value:
            value = self.scalar(e)
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.errors.error("a shape entry is a dim name or an integer", self.sp(e))
                continue
            entries.append(ast.ShapeEntry(value, self.sp(e)))
        return ast.InputDecl(name, tuple(entries), dtype, span, dtype_span)


def parse_yaml(source: Source) -> ast.SpecAST:
    """Parse YAML spec text into the shared AST."""
    return _Loader(source).load()
