"""The feature registry: every module of ``features/masks``, ``features/scores`` and
``features/blocks`` (sorted by module name; names starting with ``_`` are helpers) declares
``FEATURE`` (or ``FEATURES``), plain data read here; nothing registers itself by being
imported.

Engines look rules up by node class: ``rule("eval", node)`` is the ``eval`` rule of the
node's feature; ``block_rules(engine, hook, features)`` the rules of a block's features at
one hook point, in the registry's order. ``problems()`` lists the stages a registered feature
lacks."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from . import blocks as _blocks
from . import masks as _masks
from . import scores as _scores
from .base import STAGES, Feature
from .block_base import REPLACING_HOOKS, BlockFeature, BlockNode, CacheLayout


def _discover(package: ModuleType) -> tuple:
    found: list = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declared = getattr(module, "FEATURES", None)
        found.extend(declared if declared is not None else (module.FEATURE,))
    return tuple(found)


FEATURES: tuple[Feature, ...] = _discover(_masks) + _discover(_scores)
MASKS: dict[str, Feature] = {f.name: f for f in FEATURES if f.kind == "mask"}
SCORES: dict[str, Feature] = {f.name: f for f in FEATURES if f.kind == "score"}
BY_NODE: dict[type, Feature] = {f.node: f for f in FEATURES}
# stage -> node class -> rule (absent: the feature lacks that stage)
TABLES: dict[str, dict[type, object]] = {
    stage: {f.node: getattr(f, stage) for f in FEATURES if getattr(f, stage) is not None}
    for stage in STAGES}

# block features in pipeline order: the order of their modules (sorted by name), which is the
# order their rules run in at one hook point and the order a block lists its features in
BLOCK_FEATURES: tuple[BlockFeature, ...] = _discover(_blocks)
BLOCKS: dict[str, BlockFeature] = {f.key: f for f in BLOCK_FEATURES}
BLOCK_BY_NODE: dict[type, BlockFeature] = {f.node: f for f in BLOCK_FEATURES}
_BLOCK_RANK: dict[type, int] = {f.node: i for i, f in enumerate(BLOCK_FEATURES)}


def block_feature_of(node: BlockNode) -> BlockFeature:
    """The block feature declaring ``node``'s class."""
    try:
        return BLOCK_BY_NODE[type(node)]
    except KeyError:
        raise TypeError(f"not a block feature node: {node!r}") from None


def block_order(nodes) -> tuple[BlockNode, ...]:
    """Block feature nodes in the registry's declared order (what ``Block.features`` holds)."""
    return tuple(sorted(nodes, key=lambda n: _BLOCK_RANK[type(n)]))


def block_rules(engine: str, hook: str,
                features: tuple[BlockNode, ...]) -> list[tuple[BlockNode, Callable]]:
    """(node, rule) for each of ``features`` with a rule of ``engine`` ("reference" or
    "portable") at ``hook``, in the registry's order."""
    out = []
    for node in features:
        r = getattr(block_feature_of(node), engine).get(hook)
        if r is not None:
            out.append((node, r))
    return out


def feature_of(node: object) -> Feature:
    """The feature declaring ``node``'s class."""
    try:
        return BY_NODE[type(node)]
    except KeyError:
        raise TypeError(f"not a mask or score node: {node!r}") from None


def rule(stage: str, node: object) -> Callable:
    """The ``stage`` rule of ``node``'s feature."""
    try:
        return TABLES[stage][type(node)]
    except KeyError:
        raise TypeError(f"no '{stage}' rule for {type(node).__name__}: {node!r}") from None


def pass_allowed(pass_name: str, features: tuple[BlockNode, ...]) -> bool:
    """Whether IR pass ``pass_name`` stays exact on a block with these features (each
    feature's ``passes``)."""
    return all(pass_name in block_feature_of(f).passes for f in features)


def problems(features: tuple[Feature, ...] | None = None) -> list[str]:
    """One line per missing stage rule or clash, naming the feature and the stage."""
    out: list[str] = []
    features = FEATURES if features is None else features
    seen: dict[object, str] = {}
    for f in features:
        if f.kind not in ("mask", "score", "combinator"):
            out.append(f"feature '{f.name}': unknown kind {f.kind!r}")
            continue
        for key in ((f.kind, f.name), f.node):
            if key in seen:
                out.append(f"feature '{f.name}': {key!r} is also declared by '{seen[key]}'")
            seen[key] = f.name
        out += [f"feature '{f.name}' ({f.kind}) has no '{s}' rule" for s in f.missing()]
    out += block_problems()
    return out


def block_problems(features: tuple[BlockFeature, ...] | None = None) -> list[str]:
    """One line per missing rule of a block feature, or a key / node class declared twice."""
    out: list[str] = []
    seen: dict[object, str] = {}
    for f in BLOCK_FEATURES if features is None else features:
        for key in (f.key, f.node):
            if key in seen:
                out.append(f"block feature '{f.key}': {key!r} is also declared by "
                           f"'{seen[key]}'")
            seen[key] = f.key
        out += f.problems()
    return out


def replacing(engine: str, hook: str, features: tuple[BlockNode, ...]):
    """The one (node, rule) of ``features`` that replaces the engine's step at ``hook``
    (``REPLACING_HOOKS``), or None. ``ir.build`` rejects two on one block."""
    assert hook in REPLACING_HOOKS
    rules = block_rules(engine, hook, features)
    return rules[0] if rules else None


def cache_layout(block) -> CacheLayout | None:
    """The cache layout a feature of ``block`` (an ``ir.nodes.Block``) declares, or None: the
    block caches per-head keys and values (``past_key`` / ``past_value``)."""
    for node in block.features:
        f = block_feature_of(node)
        if f.cache is not None:
            return f.cache(node, block)
    return None


def cache_shapes(block, batch, length) -> dict[str, tuple]:
    """The cache entries of a cached ``block``: name -> shape of ``<block>.past_<name>`` /
    ``present_<name>`` with ``length`` cached tokens: ``key`` [batch, kv_heads, length,
    head_dim] and ``value`` (.., v_head_dim), or a feature's layout, ``[batch, length,
    width]`` each."""
    layout = cache_layout(block)
    if layout is None:
        return {"key": (batch, block.kv_heads, length, block.head_dim),
                "value": (batch, block.kv_heads, length, block.v_head_dim)}
    return {name: (batch, length, width) for name, width in layout.entries}


def cache_inputs(block, batch, past_len) -> dict[str, tuple]:
    """The cache graph inputs of a cached ``block``, name -> shape. Growing (``cache:
    true``): ``<block>.past_<entry>`` with ``past_len`` tokens (``cache_shapes``). Static:
    the buffers ``<block>.cache_key`` / ``cache_value`` ``[batch, kv_heads, max_len, D]``
    and the write position ``<block>.write_pos`` (shape ``()``, int64; every other cache
    input is in the model dtype)."""
    n = block.name
    if getattr(block, "static_cache", False):
        m = block.cache_max_len
        return {f"{n}.cache_key": (batch, block.kv_heads, m, block.head_dim),
                f"{n}.cache_value": (batch, block.kv_heads, m, block.v_head_dim),
                f"{n}.write_pos": ()}
    return {f"{n}.past_{w}": shape for w, shape in cache_shapes(block, batch, past_len).items()}


def cache_outputs(block, batch, present_len) -> dict[str, tuple]:
    """The cache graph outputs of a cached ``block``, name -> shape, in the order of
    ``cache_shapes``' entries: ``<block>.present_<entry>`` (growing, ``present_len``
    tokens) or the updated buffers ``<block>.cache_key_out`` / ``cache_value_out``
    (static, ``max_len`` slots)."""
    n = block.name
    if getattr(block, "static_cache", False):
        m = block.cache_max_len
        return {f"{n}.cache_key_out": (batch, block.kv_heads, m, block.head_dim),
                f"{n}.cache_value_out": (batch, block.kv_heads, m, block.v_head_dim)}
    return {f"{n}.present_{w}": shape
            for w, shape in cache_shapes(block, batch, present_len).items()}


def cache_feedback(block) -> dict[str, str]:
    """Cache output -> the input the next decode step reads it as (``present_key`` ->
    ``past_key``; a static buffer ``cache_key_out`` -> ``cache_key``)."""
    outs = cache_outputs(block, 0, 0)
    ins = [n for n, shape in cache_inputs(block, 0, 0).items() if shape != ()]
    return dict(zip(outs, ins, strict=True))


def cache_past_len(block, inputs) -> int:
    """The cached positions before the new tokens in a run with ``inputs`` (by graph input
    name): the past entries' length (growing), the write position (static), 0 without a
    cache. A missing input raises KeyError."""
    if not block.cache:
        return 0
    if getattr(block, "static_cache", False):
        return int(inputs[f"{block.name}.write_pos"])
    first = next(iter(cache_shapes(block, 0, 0)))
    return int(inputs[f"{block.name}.past_{first}"].shape[cache_axis(block)])


def cache_axis(block) -> int:
    """The time axis of ``block``'s cache entries (2 for per-head K/V, 1 for a feature's)."""
    return 2 if cache_layout(block) is None else 1
