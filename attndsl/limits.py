"""Resource limits, checked before any array is made.

A typo in one number of a spec (``d_model: 1000000``, ``seq = 10000000`` with ``random(...)``)
must not make the compiler allocate until the operating system kills it. ``check_model`` works
out, from the IR alone, what a compile would cost:

- the weights: every parameter's shape (``Model.weight_shapes``), in bytes of the model's dtype;
- the largest constant the lowering would create: lookup tables of ``global(...)``,
  ``relative_bias(...)``, ``heads(...)``, the cell table of ``random(...)`` (static lengths);
- the compile-time mask analysis (tile classification, block-sparse tile lists, folded cell
  tables) for static lengths: ``query length x key length`` cells per block;

and raises ``LimitError`` (pointing at the spec number that made it big) when one is over its
limit. ``check_cells`` bounds the analysis that ``attndsl check`` runs at the sizes it is
given, and ``check_run`` the activations of a run at its input sizes.

Every limit has a default, an environment variable, and (for the command line) a flag; see
docs/limits.md. ``override`` sets them for a block of code (the command line's flags).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, is_dataclass, replace

from .errors import AttnDSLError, LimitError
from .features import nodes as fn
from .features.registry import cache_inputs
from .ir.nodes import Block, Model
from .source import Source, Span

__all__ = ["LimitError", "Limits", "check_cells", "check_model", "check_run", "current",
           "format_bytes", "override"]

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """The limits in force. Bytes and cells are ints; ``from_env`` reads the environment."""

    max_weights_bytes: int = 16 * GIB
    """All parameters together (``ATTNDSL_MAX_WEIGHTS_GIB``, ``--max-weights-gib``); the
    default of ``current`` is lower on a small machine (``default_weights_bytes``)."""
    max_constant_bytes: int = 1 * GIB
    """One constant or lookup table of the lowering (``ATTNDSL_MAX_CONSTANT_MIB``)."""
    max_analysis_cells: int = 10**9
    """Query x key cells of one block analysed at compile time for static lengths, or by
    ``attndsl check`` at its sizes (``ATTNDSL_MAX_ANALYSIS_CELLS``)."""
    max_run_bytes: int = 16 * GIB
    """Inputs plus the largest score tensor of a run (``ATTNDSL_MAX_RUN_GIB``)."""


_ENV = {  # variable -> (field, unit in bytes or cells)
    "ATTNDSL_MAX_WEIGHTS_GIB": ("max_weights_bytes", GIB),
    "ATTNDSL_MAX_CONSTANT_MIB": ("max_constant_bytes", MIB),
    "ATTNDSL_MAX_ANALYSIS_CELLS": ("max_analysis_cells", 1),
    "ATTNDSL_MAX_RUN_GIB": ("max_run_bytes", GIB),
}
_OVERRIDES: ContextVar[dict[str, int] | None] = ContextVar("attndsl_limit_overrides",
                                                          default=None)


def parse_amount(text: str, what: str) -> float:
    """A positive number (``16``, ``0.5``, ``1e9``) for a limit; AttnDSLError otherwise."""
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise AttnDSLError(f"{what} must be a positive number, got {text!r}")
    return value


WEIGHT_COPIES = 3
"""About how many times a compile holds the weights at its peak, with margin: the graph passes
never copy weights and the model is streamed out, so what remains is the IR passes' rewrites
(fuse-qkv, fold-scale). Measured peak RSS 2.2x for 336 MB of seeded weights (two Llama-3-8B
shaped blocks, default passes) and 2.0x for 5.4 GB read from a file (benchmarks/scale.py)."""


def default_weights_bytes() -> int:
    """16 GiB, or less on a machine whose physical memory could not hold ``WEIGHT_COPIES``
    copies of that: a default must refuse what would exhaust the machine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return Limits.max_weights_bytes
    return max(GIB // 4, min(Limits.max_weights_bytes, memory // WEIGHT_COPIES))


def current() -> Limits:
    """The limits in force: ``override`` values, else the environment, else the defaults."""
    values: dict[str, int] = {"max_weights_bytes": default_weights_bytes()}
    for env, (name, unit) in _ENV.items():
        text = os.environ.get(env)
        if text is not None and text.strip():
            values[name] = int(parse_amount(text, env) * unit)
    values.update(_OVERRIDES.get() or {})
    return replace(Limits(), **values)


@contextmanager
def override(*, max_weights_gib: float | None = None, max_constant_mib: float | None = None,
             max_analysis_cells: float | None = None,
             max_run_gib: float | None = None) -> Iterator[Limits]:
    """Set limits for the code in the ``with`` block (None: unchanged); yields them."""
    values = dict(_OVERRIDES.get() or {})
    for name, value, unit in (("max_weights_bytes", max_weights_gib, GIB),
                              ("max_constant_bytes", max_constant_mib, MIB),
                              ("max_analysis_cells", max_analysis_cells, 1),
                              ("max_run_bytes", max_run_gib, GIB)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise AttnDSLError(f"{name} must be a positive number, got {value!r}")
            values[name] = int(value * unit)
    token = _OVERRIDES.set(values)
    try:
        yield current()
    finally:
        _OVERRIDES.reset(token)


def format_bytes(n: float) -> str:
    """``3.6 TiB`` style: binary units, as the limits are given."""
    for unit, scale in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB),
                        ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _format_cells(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.1e}"


# ---------------------------------------------------------------- where numbers come from


@dataclass(frozen=True)
class _Number:
    label: str  # "d_model", "heads", "buckets"...
    value: int
    span: Span | None


def _numbers(model: Model) -> list[_Number]:
    """Every integer written in the spec, with the key that set it and its span (re-parsed
    from the spec text the IR keeps: the IR itself keeps only per-declaration spans)."""
    if not model.spec_text:
        return []
    from .frontend import parse_source

    try:
        tree = parse_source(Source(model.spec_text, model.spec_path or "<string>"))
    except AttnDSLError:
        return []
    found: list[_Number] = []

    def visit(node: object, label: str) -> None:
        if isinstance(node, (tuple, list)):
            for item in node:
                visit(item, label)
            return
        if not is_dataclass(node):
            return
        name = type(node).__name__
        if name == "DimDecl" and isinstance(node.value, int):
            found.append(_Number(node.name, node.value, node.span))
            return
        if name == "Setting" and isinstance(node.value, int) and not isinstance(node.value,
                                                                                bool):
            found.append(_Number(node.key, node.value, node.value_span or node.span))
            return
        if name == "Num" and isinstance(node.value, int):
            found.append(_Number(label, node.value, node.span))
            return
        if name == "ShapeEntry" and isinstance(node.value, int):
            found.append(_Number(label, node.value, node.span))
            return
        sub = {"Setting": getattr(node, "key", label), "KwArg": getattr(node, "name", label),
               "Call": getattr(node, "name", label), "InputDecl": getattr(node, "name", label)}
        for f in fields(node):
            if f.name in ("span", "source", "errors", "value_span", "dtype_span"):
                continue
            visit(getattr(node, f.name), sub.get(name, label))

    visit(tree, "")
    return found


def _culprit(model: Model, sizes: tuple[int, ...]) -> _Number | None:
    """The spec number most likely to have made ``sizes`` big: the largest one that divides
    one of them (``heads: 1000000`` for a weight of 16000000 rows, not ``head_dim: 16``)."""
    numbers = [n for n in _numbers(model) if n.value > 1]
    hits = [n for n in numbers if any(s % n.value == 0 for s in sizes)]
    return max(hits, key=lambda n: n.value) if hits else None


def _fail(model: Model, sizes: tuple[int, ...], what: str, limit_text: str,
          fallback: Span | None) -> LimitError:
    culprit = _culprit(model, sizes)
    lead = f"{culprit.label}: {culprit.value} gives " if culprit else ""
    span = culprit.span if culprit and culprit.span is not None else fallback
    return LimitError(f"{lead}{what}, over the limit of {limit_text}", span,
                      "if the number is intended, raise the limit (see docs/limits.md)")


# ---------------------------------------------------------------- the checks


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "float16" else 4


def _check_weights(model: Model, limits: Limits) -> None:
    shapes = model.weight_shapes()
    size = _itemsize(model.dtype)
    total = sum(math.prod(s) for s in shapes.values()) * size
    if total <= limits.max_weights_bytes:
        return
    name, shape = max(shapes.items(), key=lambda kv: math.prod(kv[1]))
    big = math.prod(shape) * size
    dims = " x ".join(str(s) for s in shape)
    what = f"{name} {dims} = {format_bytes(big)}"
    if len(shapes) > 1:
        what += (f" (all weights: {sum(math.prod(s) for s in shapes.values()):,} parameters"
                 f" = {format_bytes(total)})")
    block = next((b for b in model.blocks if name.startswith(b.name + ".")), None)
    raise _fail(model, shape, what,
                f"{format_bytes(limits.max_weights_bytes)} of weights (--max-weights-gib, "
                "ATTNDSL_MAX_WEIGHTS_GIB)", block.span if block else None)


def _static_cells(model: Model, b: Block) -> tuple[int, int] | None:
    q_len, k_len = model.static_lens(b)
    if q_len is None or k_len is None or b.cache:
        return None
    return q_len, k_len


def _global_table(model: Model, b: Block, m, static):
    top = max(m.positions) if m.positions else None
    if top is None:
        return None
    return f"the lookup table of global(...) up to position {top}", top + 1, (top,)


def _random_table(model: Model, b: Block, m, static):
    if static is None:
        return None
    q, k = static
    return f"the {q} x {k} cell table of random(...)", q * k, static


def _heads_table(model: Model, b: Block, m, static):
    return f"the head table of heads(...) over {b.heads} heads", b.heads, (b.heads,)


def _relative_bias_table(model: Model, b: Block, s, static):
    reach = max(s.max_distance, s.buckets) + 1
    return (f"the bucket table of relative_bias(...) over relative positions -{reach}..{reach}",
            (2 * reach + 1) * 8, (s.buckets, s.max_distance))


# the tables a spec number sizes, by node class (a table of rules, as features/registry.py)
_TABLES = {fn.Global: _global_table, fn.Random: _random_table, fn.Heads: _heads_table,
           fn.RelativeBias: _relative_bias_table}


def block_constants(model: Model, b: Block) -> list[tuple[str, int, tuple[int, ...], object]]:
    """The tables the lowering of ``b`` would make whose size a spec number sets:
    (description, bytes, the numbers that set it, the node)."""
    out: list[tuple[str, int, tuple[int, ...], object]] = []
    nodes = list(fn.walk(b.mask)) if b.mask is not None else []
    static = _static_cells(model, b)
    for node in [*nodes, *b.score]:
        rule = _TABLES.get(type(node))
        table = rule(model, b, node, static) if rule is not None else None
        if table is not None:
            out.append((*table, node))
    return out


def _check_constants(model: Model, limits: Limits) -> None:
    for b in model.blocks:
        for what, size, numbers, node in block_constants(model, b):
            if size > limits.max_constant_bytes:
                raise _fail(model, numbers, f"block '{b.name}': {what} = {format_bytes(size)}",
                            f"{format_bytes(limits.max_constant_bytes)} for one constant "
                            "(ATTNDSL_MAX_CONSTANT_MIB)",
                            getattr(node, "span", None) or b.span)


def check_cells(model: Model, b: Block, q_len: int, k_len: int, why: str,
                limits: Limits | None = None, heads: int = 1) -> None:
    """Refuse analysing ``heads x q_len x k_len`` cells of block ``b`` when over the limit."""
    limits = limits or current()
    cells = heads * q_len * k_len
    if cells > limits.max_analysis_cells:
        shape = f"{heads} heads x " if heads > 1 else ""
        raise _fail(model, (q_len, k_len),
                    f"block '{b.name}': {why} over {shape}{q_len} x {k_len} = "
                    f"{_format_cells(cells)} query/key cells",
                    f"{_format_cells(limits.max_analysis_cells)} cells "
                    "(ATTNDSL_MAX_ANALYSIS_CELLS)", b.span)


def check_model(model: Model, limits: Limits | None = None) -> None:
    """Raise LimitError when compiling ``model`` would be over a limit: its weights, its
    largest constant table, or the mask analysis of a block with static lengths."""
    limits = limits or current()
    _check_weights(model, limits)
    _check_constants(model, limits)
    for b in model.blocks:
        static = _static_cells(model, b)
        if static is not None:
            check_cells(model, b, *static, "the compile-time mask analysis of static lengths",
                        limits)


def check_run(model: Model, shapes: Mapping[str, tuple[int, ...]], past_len: int = 0,
              limits: Limits | None = None) -> None:
    """Raise LimitError when a run on inputs of these shapes (by graph input name; cache
    inputs may be absent) would hold more than the run limit: the inputs (8 bytes an element
    at most) plus the largest dense score tensor ``[batch, heads, q, past + k]`` (float32)
    of a block. Called before random inputs are drawn."""
    limits = limits or current()
    total = sum(math.prod(int(d) for d in s) * 8 for s in shapes.values())
    largest = 0
    for b in model.blocks:
        bq, sq = (_size(model, e, shapes) for e in model.stream_dims(b.query))
        sk = _size(model, model.stream_dims(b.key)[1], shapes)
        keys = (b.cache_max_len if b.static_cache  # attends over every slot of its buffer
                else sk + (past_len if b.cache else 0))
        largest = max(largest, bq * b.heads * sq * keys * 4)
    if total + largest > limits.max_run_bytes:
        raise LimitError(f"a run at these sizes needs about {format_bytes(total + largest)} "
                         f"(inputs {format_bytes(total)}, scores {format_bytes(largest)}), over "
                         f"the limit of {format_bytes(limits.max_run_bytes)} "
                         "(ATTNDSL_MAX_RUN_GIB)", hint="give smaller sizes, or raise the limit")


def _size(model: Model, entry: str | int, shapes: Mapping[str, tuple[int, ...]]) -> int:
    fixed = model.static_size(entry)
    if fixed is not None:
        return fixed
    for i in model.inputs:  # a dynamic dim: its size in the first input that has it
        shape = shapes.get(i.name)
        if shape is not None and entry in i.shape and len(shape) == len(i.shape):
            return int(shape[i.shape.index(entry)])
    return 1


def input_shapes(model: Model, dims: Mapping[str, int],
                 past_len: int = 0) -> dict[str, tuple[int, ...]]:
    """The shape of every graph input at these dim sizes (cache inputs with ``past_len``
    positions), as ``attndsl.inputs.random_inputs`` draws them: for ``check_run``."""
    shapes = {i.name: tuple(int(dims[s]) if isinstance(s, str) else s for s in i.shape)
              for i in model.inputs}
    for b in model.blocks:
        if b.cache:
            batch = shapes[model.root_stream(b.query)][0]
            shapes.update(cache_inputs(b, batch, past_len))
    return shapes
