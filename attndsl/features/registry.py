"""The feature registry: every module of ``features/masks`` and ``features/scores`` (sorted
by module name; names starting with ``_`` are helpers) declares ``FEATURE`` (or
``FEATURES``), plain data read here; nothing registers itself by being imported.

Engines look rules up by node class: ``rule("eval", node)`` is the ``eval`` rule of the
node's feature. ``problems()`` lists the stages a registered feature lacks."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from types import ModuleType

from . import masks as _masks
from . import scores as _scores
from .base import STAGES, Feature


def _discover(package: ModuleType) -> tuple[Feature, ...]:
    found: list[Feature] = []
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
    return out
