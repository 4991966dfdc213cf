"""Writers: a parsed spec (``ast.SpecAST``) as canonical YAML or ``.attn`` text.

Both writers keep what the user wrote (no defaults are filled in, settings keep their order)
so that reading the output back gives an equal AST. Mask expressions and score modifiers are
written in the one expression syntax with the fewest parentheses that keep the tree's shape.
Comments are not kept.
"""

from __future__ import annotations

import json
import math
import re

import yaml

from ..errors import AttnDSLError
from . import ast

__all__ = ["format_call", "format_expr", "write_dsl", "write_yaml"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_KEYS = ("query", "key_value", "key", "value", "project")  # in `attention(...)`
_SIZE_KEYS = ("heads", "kv_heads", "head_dim", "v_head_dim")  # share one line
_FLAG_KEYS = ("bias", "cache")  # default false: a bare key means true

# ---------------------------------------------------------------- expressions

_PREC = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def _number(v: int | float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        raise AttnDSLError(f"cannot write the number {v!r} in a spec")
    return repr(v) if isinstance(v, float) else str(v)


def _arg(a: ast.Arg) -> str:
    if isinstance(a, ast.Num):
        return a.text or _number(a.value)
    if isinstance(a, ast.Name):
        return a.name
    if isinstance(a, ast.Str):
        return _dsl_string(a.value)
    if isinstance(a, ast.Range):
        return f"{_arg(a.lo)}..{_arg(a.hi)}"
    return f"{a.name}={_arg(a.value)}"


def format_call(call: ast.Call) -> str:
    """``name`` or ``name(arg, key=value, a..b)``."""
    if call.bare and not call.args:
        return call.name
    return f"{call.name}({', '.join(_arg(a) for a in call.args)})"


def format_expr(expr: ast.Expr, need: int = 0) -> str:
    """A mask expression; precedence ``~`` > ``&`` > ``|``. An operand in parentheses in the
    tree (``(a & b) & c``) keeps its parentheses, so the text reads back as the same tree."""
    prec = _PREC.get(type(expr), 4)
    if isinstance(expr, ast.Call):
        text = format_call(expr)
    elif isinstance(expr, ast.Not):
        text = "~" + format_expr(expr.operand, 3)
    else:
        op = " | " if isinstance(expr, ast.Or) else " & "
        text = op.join(format_expr(e, prec + 1) for e in expr.operands)
    return f"({text})" if prec < need else text


def _scores(calls: tuple[ast.Call, ...]) -> str:
    return ", ".join(format_call(c) for c in calls)


# ---------------------------------------------------------------- .attn


def _dsl_string(s: str) -> str:
    if '"' in s or "\n" in s or "\r" in s:
        raise AttnDSLError(f"cannot write {s!r} in the .attn syntax (no quotes or new lines in "
                           "strings)")
    return f'"{s}"'


def _dsl_name(s: str) -> str:
    """An identifier as a name; anything else (or true/false) as a quoted string."""
    return s if _IDENT.fullmatch(s) and s not in ("true", "false") else _dsl_string(s)


def _dsl_ident(s: str, what: str) -> str:
    if not _IDENT.fullmatch(str(s)):
        raise AttnDSLError(f"cannot write {what} {s!r} in the .attn syntax: names there are "
                           "identifiers")
    return str(s)


def _dsl_scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, str):
        return _dsl_name(v)
    if isinstance(v, (ast.Call, ast.Not, ast.And, ast.Or)):
        raise AttnDSLError("a mask expression can only be the value of 'mask'")
    raise AttnDSLError(f"cannot write the value {v!r} in the .attn syntax")


def _dsl_setting(s: ast.Setting) -> str:
    v = s.value
    if s.key == "mask" and isinstance(v, (ast.Call, ast.Not, ast.And, ast.Or)):
        return f"mask {format_expr(v)}"
    if s.key == "score" and isinstance(v, tuple):
        return f"score {_scores(v)}".rstrip()
    key = _dsl_ident(s.key, "key")
    if isinstance(v, tuple):  # a block feature's options (`rope theta = 1e6, dim = 8`)
        if not v:  # `{}` in YAML: the defaults, as `true` says them in both syntaxes
            return f"{key} true"
        args = ", ".join(f"{_dsl_ident(k.key, f'{key} key')} = {_dsl_scalar(k.value)}"
                         for k in v)
        return f"{key} {args}"
    return key if v is True and key in _FLAG_KEYS else f"{key} {_dsl_scalar(v)}"


def _dsl_block(b: ast.BlockDecl) -> list[str]:
    settings = list(b.settings)
    head = []
    while settings and settings[0].key in _HEADER_KEYS and isinstance(settings[0].value,
                                                                       (str, bool)):
        s = settings.pop(0)
        head.append(f"{s.key} = {_dsl_scalar(s.value)}")
    first = (f"block {_dsl_ident(b.name, 'block name')} = {_dsl_ident(b.kind, 'block kind')}"
             f"({', '.join(head)}) {{")
    if not settings:
        return [first + "}"]
    lines: list[str] = []
    for i, s in enumerate(settings):
        text = _dsl_setting(s)
        if i and s.key in _SIZE_KEYS and settings[i - 1].key in _SIZE_KEYS:
            lines[-1] += ", " + text
        else:
            lines.append(text)
    return [first, *(f"  {line}" for line in lines), "}"]


def write_dsl(spec: ast.SpecAST) -> str:
    """The spec in the ``.attn`` syntax."""
    out = [f"attndsl {_dsl_scalar(spec.version.value)}"]
    keywords = {"name": "model", "dtype": "dtype", "seed": "seed", "weights": "weights"}
    for s in spec.top:
        value = _dsl_string(s.value) if s.key == "weights" else _dsl_scalar(s.value)
        out.append(f"{keywords[s.key]} {value}")
    if spec.dims:
        out += ["", "dims " + ", ".join(
            f"{_dsl_ident(d.name, 'dim name')} = {_dsl_scalar(d.value)}" for d in spec.dims)]
    if spec.inputs:
        out.append("")
    for i in spec.inputs:
        shape = ", ".join(_dsl_scalar(e.value) for e in i.shape)
        dtype = _dsl_ident(i.dtype, "dtype") if i.dtype is not None else ""
        out.append(f"input {_dsl_ident(i.name, 'input name')}: {dtype}[{shape}]")
    for b in spec.blocks:
        out += ["", *_dsl_block(b)]
    if spec.outputs:
        out.append("")
    for o in spec.outputs:
        ref = _dsl_ident(o.stream, "stream") + (f".{_dsl_ident(o.attr, 'attribute')}"
                                                 if o.attr else "")
        out.append(f"output {_dsl_ident(o.name, 'output name')} = {ref}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- YAML


def _yaml_plain_ok(text: str, flow: bool) -> bool:
    """Whether ``text`` reads back as the same string when written without quotes."""
    doc = f"[{text}]" if flow else f"k: {text}"
    try:
        got = yaml.safe_load(doc)
    except yaml.YAMLError:
        return False
    return got == ([text] if flow else {"k": text})


def _yaml_str(text: str, flow: bool = False) -> str:
    if text and _yaml_plain_ok(text, flow):
        return text
    if "'" not in text and "\n" not in text:
        return f"'{text}'"  # single quotes keep columns: expression errors point into the file
    return json.dumps(text, ensure_ascii=False)


def _yaml_float(v: float) -> str:
    """A float YAML 1.1 reads as a float: it needs a dot and a signed exponent."""
    text = _number(v)
    mantissa, e, exp = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if e and exp[0] not in "+-":
        exp = "+" + exp
    return mantissa + (f"e{exp}" if e else "")


def _yaml_scalar(v: object, flow: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _yaml_float(v)
    if isinstance(v, str):
        return _yaml_str(v, flow)
    if v is None:
        return "null"
    raise AttnDSLError(f"cannot write the value {v!r} in YAML")


def _yaml_setting(s: ast.Setting) -> str:
    v = s.value
    key = _yaml_str(s.key)
    if s.key == "mask" and isinstance(v, (ast.Call, ast.Not, ast.And, ast.Or)):
        return f"{key}: {_yaml_str(format_expr(v))}"
    if s.key == "score" and isinstance(v, tuple):
        return f"{key}: [{_scores(v)}]"
    if isinstance(v, tuple):  # a block feature's options
        items = ", ".join(f"{_yaml_str(k.key, True)}: {_yaml_scalar(k.value, True)}" for k in v)
        return f"{key}: {{{items}}}"
    return f"{key}: {_yaml_scalar(v)}"


def write_yaml(spec: ast.SpecAST) -> str:
    """The spec in the YAML syntax."""
    out = [f"attndsl: {_yaml_scalar(spec.version.value)}"]
    out += [f"{s.key}: {_yaml_scalar(s.value)}" for s in spec.top]
    if spec.dims:
        out.append("dims:")
        out += [f"  {_yaml_str(d.name)}: {_yaml_scalar(d.value)}" for d in spec.dims]
    if spec.inputs:
        out.append("inputs:")
    for i in spec.inputs:
        shape = "[" + ", ".join(_yaml_scalar(e.value, True) for e in i.shape) + "]"
        if i.dtype is not None:
            shape = f"{{shape: {shape}, dtype: {_yaml_scalar(i.dtype, True)}}}"
        out.append(f"  {_yaml_str(i.name)}: {shape}")
    if spec.blocks:
        out.append("blocks:")
    for b in spec.blocks:
        if b.kind != "attention":
            raise AttnDSLError(f"block kind '{b.kind}' has no YAML form (blocks are attention)")
        if not b.settings:
            out.append(f"  {_yaml_str(b.name)}: {{}}")
            continue
        out.append(f"  {_yaml_str(b.name)}:")
        out += [f"    {_yaml_setting(s)}" for s in b.settings]
    if spec.outputs:
        out.append("outputs:")
    for o in spec.outputs:
        ref = o.stream + (f".{o.attr}" if o.attr else "")
        out.append(f"  {_yaml_str(o.name)}: {_yaml_str(ref)}")
    for s in spec.extra:
        out.append(f"{_yaml_str(s.key)}: {_yaml_scalar(s.value)}")
    return "\n".join(out) + "\n"
