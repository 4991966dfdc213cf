"""The primitive table: names, parameters and checks of every mask primitive and score
modifier, used to turn parsed calls (``frontend.ast``) into typed nodes (``masks.nodes``),
and to print typed nodes back in the one expression syntax."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ErrorCollector, did_you_mean
from ..frontend import ast
from . import nodes as n


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "int" (>= minimum), "float" (> 0), "bool", "input", "ints", "int_or_input"
    default: object = None
    minimum: int = 0


@dataclass(frozen=True)
class Primitive:
    name: str
    params: tuple[Param, ...]
    make: Callable[..., object]
    doc: str
    variadic: bool = False  # global(i, j, ...), heads(a, b, ...)


def _p(name, kind, default=None, minimum=0):
    return Param(name, kind, default, minimum)


MASKS: dict[str, Primitive] = {p.name: p for p in (
    Primitive("all", (), lambda: n.All(), "always true"),
    Primitive("none", (), lambda: n.Never(), "never true"),
    Primitive("causal", (), lambda: n.Causal(), "k <= q"),
    Primitive("window", (_p("l", "int"), _p("r", "int")), n.Window, "q - l <= k <= q + r"),
    Primitive("sliding", (_p("w", "int", minimum=1),), n.Sliding, "k <= q and q - k < w"),
    Primitive("dilated", (_p("l", "int"), _p("r", "int"), _p("d", "int", minimum=1)), n.Dilated,
              "window(l, r) and (q - k) % d == 0"),
    Primitive("strided", (_p("s", "int", minimum=1),), n.Strided, "(q - k) % s == 0"),
    Primitive("chunk", (_p("c", "int", minimum=1),), n.Chunk, "q // c == k // c"),
    Primitive("summary", (_p("c", "int", minimum=1), _p("n", "int", minimum=1)), n.Summary,
              "k % c >= c - n"),
    Primitive("prefix", (_p("n", "int_or_input"),), None, "k < n (or k < len[b])"),
    Primitive("global", (_p("i", "int"),), lambda *pos: n.Global(tuple(pos)),
              "q or k is a listed position", variadic=True),
    Primitive("heads", (_p("h", "int"),), lambda *hs: n.Heads(tuple(hs)),
              "h in the listed heads (a..b is inclusive)", variadic=True),
    Primitive("random", (_p("r", "int", minimum=1), _p("block", "int", 64, minimum=1),
                         _p("seed", "int", 0)), n.Random, "BigBird random key blocks"),
    Primitive("padding", (_p("len", "input"),), n.Padding, "k < len[b]"),
    Primitive("document", (_p("ids", "input"),), n.Document, "ids[b, q] == ids[b, k]"),
    Primitive("mask", (_p("m", "input"),), n.MaskInput, "a bool input"),
)}

SCORES: dict[str, Primitive] = {p.name: p for p in (
    Primitive("alibi", (), lambda: n.Alibi(), "s -= slope[h] * |q - k|"),
    Primitive("softcap", (_p("c", "float"),), n.Softcap, "s = c * tanh(s / c)"),
    Primitive("relative_bias", (_p("buckets", "int", 32, minimum=1),
                                _p("max_distance", "int", 128, minimum=1),
                                _p("bidirectional", "bool", True)), n.RelativeBias,
              "s += table[bucket(k - q), h]"),
    Primitive("bias", (_p("t", "input"),), n.BiasInput, "s += t"),
)}


_MAX_RANGE = 1 << 16  # a..b in heads(...) / global(...) lists every value


def _arg_value(arg, param: Param, errors: ErrorCollector, where: str):
    """Check one argument against its parameter; returns the value or None after an error."""
    span = getattr(arg, "span", None)
    if param.kind == "input" or (param.kind == "int_or_input" and isinstance(arg, ast.Name)):
        if isinstance(arg, ast.Name) and arg.name not in ("true", "false"):
            return ("input", arg.name)
        errors.error(f"{where}: '{param.name}' must name an input", span)
        return None
    if param.kind == "bool":
        if isinstance(arg, ast.Name) and arg.name in ("true", "false"):
            return arg.name == "true"
        errors.error(f"{where}: '{param.name}' must be true or false", span)
        return None
    if not isinstance(arg, ast.Num):
        errors.error(f"{where}: '{param.name}' must be a number", span)
        return None
    if param.kind == "float":
        if not 0 < arg.value < math.inf:
            errors.error(f"{where}: '{param.name}' must be positive and finite, got {arg.text}",
                         span)
            return None
        return float(arg.value)
    if not isinstance(arg.value, int):
        errors.error(f"{where}: '{param.name}' must be an integer, got {arg.text}", span)
        return None
    if arg.value < param.minimum:
        errors.error(f"{where}: '{param.name}' must be >= {param.minimum}, got {arg.text}", span)
        return None
    return arg.value


def build_call(call: ast.Call, table: dict[str, Primitive], errors: ErrorCollector,
               what: str) -> object | None:
    """A parsed call as a typed node; problems go to ``errors`` and give None."""
    prim = table.get(call.name)
    if prim is None:
        other = MASKS if table is SCORES else SCORES
        hint = did_you_mean(call.name, table)
        if hint is None and call.name in other:
            hint = f"'{call.name}' is a {'mask' if other is MASKS else 'score modifier'}"
        errors.error(f"unknown {what} '{call.name}'", call.span, hint)
        return None
    where = f"{call.name}(...)"
    values: list[object] = []
    if prim.variadic:
        for arg in call.args:
            if isinstance(arg, ast.Range):
                lo = _arg_value(arg.lo, prim.params[0], errors, where)
                hi = _arg_value(arg.hi, prim.params[0], errors, where)
                if lo is not None and hi is not None:
                    if hi < lo:
                        errors.error(f"{where}: empty range {lo}..{hi}", arg.span)
                    elif hi - lo >= _MAX_RANGE:
                        errors.error(f"{where}: range {lo}..{hi} is too long", arg.span,
                                     f"at most {_MAX_RANGE} values")
                    else:
                        values.extend(range(lo, hi + 1))
            elif isinstance(arg, ast.KwArg):
                errors.error(f"{where} takes no keyword arguments", arg.span)
            else:
                v = _arg_value(arg, prim.params[0], errors, where)
                if v is not None:
                    values.append(v)
        if not call.args:
            errors.error(f"{where} needs at least one position", call.span)
            return None
        return _with_span(prim.make(*sorted(set(values))), call.span)
    given: dict[str, object] = {}
    positional = [a for a in call.args if not isinstance(a, ast.KwArg)]
    if len(positional) > len(prim.params):
        errors.error(f"{call.name} takes {len(prim.params)} argument(s), got {len(positional)}",
                     call.span, _usage(prim))
        return None
    for param, arg in zip(prim.params, positional, strict=False):
        given[param.name] = arg
    for arg in call.args:
        if isinstance(arg, ast.KwArg):
            names = [p.name for p in prim.params]
            if arg.name not in names:
                errors.error(f"{call.name} has no parameter '{arg.name}'", arg.span,
                             did_you_mean(arg.name, names) or _usage(prim))
                return None
            if arg.name in given:
                errors.error(f"{call.name}: '{arg.name}' given twice", arg.span)
                return None
            given[arg.name] = arg.value
        elif isinstance(arg, ast.Range):
            errors.error(f"{where}: a range a..b is only allowed in heads(...)", arg.span)
            return None
    out: list[object] = []
    ok = True
    for param in prim.params:
        if param.name not in given:
            if param.default is None:
                errors.error(f"{call.name} needs '{param.name}'", call.span, _usage(prim))
                return None
            out.append(param.default)
            continue
        v = _arg_value(given[param.name], param, errors, where)
        ok = ok and v is not None
        out.append(v)
    if not ok:
        return None
    if call.name == "prefix":
        v = out[0]
        if isinstance(v, tuple):
            return n.Padding(v[1], span=call.span)
        return n.Prefix(v, span=call.span)
    out = [v[1] if isinstance(v, tuple) else v for v in out]
    if call.name in ("window", "dilated") and out[0] + out[1] < 0:
        errors.error(f"{call.name}: the window is empty (l + r < 0)", call.span)
    return prim.make(*out, span=call.span) if prim.params else _with_span(prim.make(), call.span)


def _with_span(node, span):
    import dataclasses
    return dataclasses.replace(node, span=span)


def _usage(prim: Primitive) -> str:
    args = ", ".join(p.name if p.default is None else f"{p.name}={_fmt(p.default)}"
                     for p in prim.params)
    return f"usage: {prim.name}({args}{', ...' if prim.variadic else ''})"


def build_mask(expr: ast.Expr, errors: ErrorCollector) -> n.Mask | None:
    """A parsed mask expression as typed nodes."""
    if isinstance(expr, ast.Call):
        return build_call(expr, MASKS, errors, "mask primitive")
    if isinstance(expr, ast.Not):
        inner = build_mask(expr.operand, errors)
        return None if inner is None else n.Not(inner, span=expr.span)
    terms = [build_mask(t, errors) for t in expr.operands]
    if any(t is None for t in terms):
        return None
    cls = n.And if isinstance(expr, ast.And) else n.Or
    return cls(tuple(terms), span=expr.span)


# ---------------------------------------------------------------- printing


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _ranges(values: tuple[int, ...]) -> str:
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(f"{values[i]}..{values[j]}" if j - i >= 2 else
                     ", ".join(str(v) for v in values[i:j + 1]))
        i = j + 1
    return ", ".join(parts)


def format_mask(m: n.Mask, parent: int = 0) -> str:
    """Canonical text of a mask (precedence: ~ > & > |; parentheses only where needed)."""
    if isinstance(m, n.Or):
        s = " | ".join(format_mask(t, 1) for t in m.terms)
        return f"({s})" if parent > 1 else s
    if isinstance(m, n.And):
        s = " & ".join(format_mask(t, 2) for t in m.terms)
        return f"({s})" if parent > 2 else s
    if isinstance(m, n.Not):
        return "~" + format_mask(m.term, 3)
    return format_leaf(m)


def format_leaf(m: object) -> str:
    simple = {n.All: "all", n.Never: "none", n.Causal: "causal", n.Alibi: "alibi"}
    if type(m) in simple:
        return simple[type(m)]
    if isinstance(m, n.Window):
        return f"window({m.left}, {m.right})"
    if isinstance(m, n.Sliding):
        return f"sliding({m.size})"
    if isinstance(m, n.Dilated):
        return f"dilated({m.left}, {m.right}, {m.dilation})"
    if isinstance(m, n.Strided):
        return f"strided({m.stride})"
    if isinstance(m, n.Chunk):
        return f"chunk({m.size})"
    if isinstance(m, n.Summary):
        return f"summary({m.c}, {m.n})"
    if isinstance(m, n.Prefix):
        return f"prefix({m.n})"
    if isinstance(m, n.Global):
        return f"global({', '.join(map(str, m.positions))})"
    if isinstance(m, n.Heads):
        return f"heads({_ranges(m.heads)})"
    if isinstance(m, n.Random):
        return f"random({m.r}, block={m.block}, seed={m.seed})"
    if isinstance(m, n.Padding):
        return f"padding({m.input})"
    if isinstance(m, n.Document):
        return f"document({m.input})"
    if isinstance(m, n.MaskInput):
        return f"mask({m.input})"
    if isinstance(m, n.Softcap):
        return f"softcap({_fmt(m.cap)})"
    if isinstance(m, n.RelativeBias):
        return (f"relative_bias(buckets={m.buckets}, max_distance={m.max_distance}, "
                f"bidirectional={_fmt(m.bidirectional)})")
    if isinstance(m, n.BiasInput):
        return f"bias({m.input})"
    raise TypeError(f"not a mask or score node: {m!r}")
