"""The shape of a block feature: a setting of an attention block (``rope``, ``qk_norm``, ...)
declared once in its own module under ``features/blocks/`` (see docs/architecture.md).

A block feature is a mapping setting of a block (``rope: {theta: 1e6}``, ``.attn``:
``rope theta = 1e6``) or a shorthand scalar (``rope: true``, ``qk_norm: rms``). Its module
declares ``FEATURE = BlockFeature(...)``: the setting key, the options with their checks, the
IR node (a frozen dataclass deriving from ``BlockNode``), how the node prints, the weights it
needs, what ``attndsl check`` reports, and its rules at the named hook points of the block
pipeline for the reference interpreter (``reference``) and the portable lowering
(``portable``), plus what the fused ONNX Runtime kernels make of it (``ort``).

Like ``features/base.py`` this module imports only the standard library and
``attndsl.source``: rules receive the engines' context objects and call their methods.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..source import Span

# the hook points of the block pipeline, in pipeline order (docs/architecture.md, "Block
# features"): every engine runs a block as
#   project -> projected -> [split heads] -> heads -> rope -> post_rope -> [scale] -> cache
#   -> values -> [logits, score modifiers, mask] -> softmax -> [@ V] -> attended -> [merge
#   heads] -> merged -> [output projection]
HOOKS = ("project", "projected", "heads", "rope", "post_rope", "cache", "values", "softmax",
         "attended", "merged")
# hooks whose rule replaces the engine's own step (at most one feature of a block may do so)
REPLACING_HOOKS = ("project", "cache", "softmax")


@dataclass(frozen=True, slots=True)
class BlockNode:
    """Base class of block feature nodes (the IR of one block setting). Frozen, hashable;
    the last field of each is ``span: Span | None = span_field()``."""


@dataclass(frozen=True)
class Option:
    """One option of a block feature's mapping.

    ``kind``: "float" (positive and finite), "number" (finite), "int" (an integer >=
    ``minimum``), "bool", "choice" (one of ``choices``, did-you-mean on a typo) or "ints" (a
    list of integers; not used yet). ``default`` is the value when the option is not given
    (None: decided by the feature's ``make`` from the block, e.g. RoPE's ``dim`` =
    head_dim). ``doc`` is one line for docs and messages."""

    name: str
    kind: str
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: int = 0
    doc: str = ""

    def describe(self) -> str:
        """What a valid value is, as error messages say it ("a positive number")."""
        return {
            "float": "a positive number", "number": "a finite number",
            "int": f"an integer >= {self.minimum}", "bool": "true or false",
            "choice": "one of " + ", ".join(self.choices),
        }[self.kind]

    def accepts(self, value: object) -> bool:
        """Whether ``value`` (a parsed scalar) is valid for this option."""
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if self.kind == "float":
            return (is_int or isinstance(value, float)) and math.isfinite(value) and value > 0
        if self.kind == "number":
            return (is_int or isinstance(value, float)) and math.isfinite(value)
        if self.kind == "int":
            return is_int and value >= self.minimum
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        raise ValueError(f"unknown option kind {self.kind!r}")

    def convert(self, value: object) -> object:
        """The checked value as the node holds it (floats as float)."""
        return float(value) if self.kind in ("float", "number") else value


@dataclass(frozen=True)
class CacheLayout:
    """What a block caches when a feature replaces its per-head keys and values (MLA's
    latent): each entry ``(name, width)`` is a graph input ``<block>.past_<name>`` ``[batch,
    past_len, width]`` and an output ``<block>.present_<name>`` ``[batch, present_len,
    width]`` in the model dtype (time on axis 1). ``kv`` is ``(heads, key width, value
    width)`` of the new keys and values the feature's ``project`` rule returns: the engine
    splits them into that many heads, runs ``heads`` .. ``post_rope`` on them, and the
    feature's ``cache`` rule turns them (and the past entries) into what the attention
    reads."""

    entries: tuple[tuple[str, int], ...]
    kv: tuple[int, int, int]


@dataclass(frozen=True)
class BlockFeature:
    """One block feature, declared once in ``features/blocks/<name>.py``.

    Build (``ir/build.py`` runs the generic part: the mapping's keys against ``options``
    with did-you-mean, each value against its option, spans on every message):

    - ``key``: the block setting (``rope``); ``options``; ``doc`` (one line); ``example``
      (a mapping as written in messages: ``{theta: 10000.0}``);
    - ``shorthand(value) -> dict | None``: the options a scalar stands for (``true`` -> {},
      ``qk_norm: rms`` -> {"kind": "rms"}); None: not a valid shorthand. ``false`` always
      means "not present";
    - ``make(values, ctx) -> node | None``: the node from the checked option values (every
      option present, None where its default is None), with the cross-checks against the
      block; ``ctx`` is ``ir.build.BlockCheck``: ``ctx.heads``, ``ctx.kv_heads``,
      ``ctx.head_dim``, ``ctx.v_head_dim``, ``ctx.project``, ``ctx.cache``,
      ``ctx.self_attn``, ``ctx.dtype``, ``ctx.span(option)`` (the value's span, else the
      setting's), ``ctx.err(msg, span, hint)``; None after reporting an error.

    Stages:

    - ``format(node) -> tuple[(option, value), ...]``: every option's resolved value, in
      declaration order; the IR printer prints it (``rope theta=10000.0, dim=8, ...``) and
      ``ir.build.feature_setting(node)`` turns it into the syntax tree setting both writers
      print;
    - ``weights(node, block) -> dict[name, shape]``: parameters (PyTorch layout, names
      ``<block>.<...>``);
    - ``init(name, shape, rng) -> array``: seeded values of its weights (``weights.py``;
      None: PyTorch's Linear range U(-1/sqrt(in), 1/sqrt(in)));
    - ``summary(node, block) -> str``: the text ``attndsl check`` prints on the feature's
      line; ``listed`` keeps the line (``-``) for blocks without the feature;
      ``flops(node, block, batch, q_len, k_len) -> int``: the matrix-product FLOPs it adds;
    - ``reference`` / ``portable``: hook name -> rule (``HOOKS``); each rule is called as
      ``rule(node, st)`` with the engine's mutable block state (``reference.BlockState``,
      ``lower.onnx_portable.BlockLowering``) and updates its fields; ``softmax`` and
      ``project`` rules return the replacement value instead (see docs/architecture.md);
    - ``passes``: the IR passes that stay exact with the feature on a block (``fold-scale``:
      q stays linear in the query projection; ``fuse-qkv``: the projections may become one);
      a pass skips a block with a feature that does not list it;
    - ``ort(node, block) -> str``: ``"rotary"`` (the fused kernels apply it as their
      rotary embedding), ``"head_sink"`` (GroupQueryAttention's sink: its ``head_sink``
      input, the feature's one weight, or ``smooth_softmax`` without a weight) or the reason
      no fused kernel computes it (the block then keeps the portable lowering and
      ``--explain`` prints the reason);
    - ``cache(node, block) -> CacheLayout``: for a feature that changes what a block caches
      (MLA's latent); None: the block caches its per-head keys and values. Such a feature
      also has a ``cache`` hook rule in both engines, which replaces the engine's join of
      the cache (docs/architecture.md).
    """

    key: str
    node: type
    options: tuple[Option, ...]
    doc: str
    example: str
    make: Callable[[dict[str, object], object], BlockNode | None]
    format: Callable[[BlockNode], tuple[tuple[str, object], ...]]
    shorthand: Callable[[object], dict[str, object] | None] = (
        lambda v: {} if v is True or v is None else None)
    weights: Callable[[BlockNode, object], dict[str, tuple[int, ...]]] = (
        lambda node, block: {})
    init: Callable[[str, tuple[int, ...], object], object] | None = None
    summary: Callable[[BlockNode, object], str] | None = None
    listed: bool = False
    flops: Callable[[BlockNode, object, int, int, int], int] = (
        lambda node, block, batch, q_len, k_len: 0)
    reference: Mapping[str, Callable] = field(default_factory=dict)
    portable: Mapping[str, Callable] = field(default_factory=dict)
    ort: Callable[[BlockNode, object], str] | None = None
    passes: frozenset[str] = frozenset()
    cache: Callable[[BlockNode, object], CacheLayout] | None = None

    def problems(self) -> list[str]:
        """What is missing or wrong in the declaration, one line each."""
        out = []
        for stage in ("summary", "ort"):
            if getattr(self, stage) is None:
                out.append(f"block feature '{self.key}' has no '{stage}' rule")
        for engine in ("reference", "portable"):
            rules = getattr(self, engine)
            out += [f"block feature '{self.key}': unknown {engine} hook '{h}'"
                    for h in rules if h not in HOOKS]
            if not rules:
                out.append(f"block feature '{self.key}' has no {engine} rule")
            if (self.cache is None) != ("cache" not in rules):
                out.append(f"block feature '{self.key}': a cache layout and a {engine} "
                           "'cache' rule go together")
        if set(self.reference) != set(self.portable):
            out.append(f"block feature '{self.key}': reference hooks "
                       f"{sorted(self.reference)} != portable hooks {sorted(self.portable)}")
        return out


def format_option(value: object) -> str:
    """An option value as the IR printer writes it (``10000.0``, ``8``, ``false``, ``rms``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_node(key: str, items: tuple[tuple[str, object], ...]) -> str:
    """``key a=1, b=true``: one block feature as the IR printer writes it."""
    return f"{key} " + ", ".join(f"{k}={format_option(v)}" for k, v in items)


def block_span(node: BlockNode) -> Span | None:
    """The span a node was written at (for lowering errors)."""
    return getattr(node, "span", None)
