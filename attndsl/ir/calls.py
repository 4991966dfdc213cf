"""Parsed mask and score calls (``frontend.ast``) as typed nodes, checked against the
parameters each feature declares (``features.registry``)."""

from __future__ import annotations

import math

from ..errors import ErrorCollector, did_you_mean, suggest
from ..features import nodes as n
from ..features.base import Feature, Param, format_value
from ..features.registry import MASKS, SCORES
from ..frontend import ast

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


def build_call(call: ast.Call, table: dict[str, Feature], errors: ErrorCollector,
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
    if prim.variadic:
        return _variadic(call, prim, errors)
    given = _given(call, prim, errors)
    out = None if given is None else _values(call, prim, given, errors)
    if out is None:
        return None
    if prim.make is not None:
        return prim.make(out, call.span)
    out = [v[1] if isinstance(v, tuple) else v for v in out]  # ("input", name) -> name
    if prim.check_args is not None:
        prim.check_args(call.name, out, call.span, errors)
    return prim.node(*out, span=call.span)


def _variadic(call: ast.Call, prim: Feature, errors: ErrorCollector) -> object | None:
    """``global(i, j, a..b)`` / ``heads(...)``: every argument a value of the one parameter;
    ``prim.make`` receives them sorted and unique."""
    where = f"{call.name}(...)"
    values: list[object] = []
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
    return prim.make(sorted(set(values)), call.span)


def _given(call: ast.Call, prim: Feature, errors: ErrorCollector) -> dict[str, object] | None:
    """The argument given for each named parameter (positional, then keyword)."""
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
                             suggest(arg.name, names, _usage(prim)))
                return None
            if arg.name in given:
                errors.error(f"{call.name}: '{arg.name}' given twice", arg.span)
                return None
            given[arg.name] = arg.value
        elif isinstance(arg, ast.Range):
            errors.error(f"{call.name}(...): a range a..b is only allowed in heads(...)",
                         arg.span)
            return None
    return given


def _values(call: ast.Call, prim: Feature, given: dict[str, object],
            errors: ErrorCollector) -> list[object] | None:
    """Checked values of every parameter in order (defaults filled in), or None."""
    where = f"{call.name}(...)"
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
    return out if ok else None


def _usage(prim: Feature) -> str:
    args = ", ".join(p.name if p.default is None else f"{p.name}={format_value(p.default)}"
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
