"""attndsl's compile variants (target x strategy), discovered from ``attndsl.lower.compile``
and the target table ``attndsl.lower.targets``.

The harness does not hard-code the compiler's options: it reads ``CompileOptions`` (its
fields, their ``Literal`` choices or the module's choice tuples) when it runs, so a target or
strategy added later is benchmarked without touching this file, and an older compiler without
options is benchmarked as the single "default" variant.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from typing import Any

_FALLBACK = {"target": ("portable", "ort"), "sparse": ("auto", "dense", "block")}
_CONSTANTS = {"target": ("TARGET_NAMES", "TARGETS", "TARGET_CHOICES"),
              "sparse": ("SPARSE_CHOICES", "SPARSE_MODES", "STRATEGIES", "SPARSE")}


@dataclass(frozen=True)
class Variant:
    """One way to compile: ``None`` fields keep the compiler's default."""

    target: str | None = None
    sparse: str | None = None
    block_size: int | None = None
    is_default: bool = False  # equal to CompileOptions() (what a user gets)

    @property
    def label(self) -> str:
        parts = [p for p in (self.target, self.sparse) if p is not None]
        if self.block_size is not None:
            parts.append(f"b{self.block_size}")
        return "/".join(parts) or "default"

    @property
    def what(self) -> str:
        return (f"attndsl compile (target={self.target or 'default'}, "
                f"sparse={self.sparse or 'default'}"
                + (f", block_size={self.block_size}" if self.block_size else "") + ") in ORT")

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (("target", self.target), ("sparse", self.sparse),
                                  ("block_size", self.block_size)) if v is not None}


def _choices(modules, options_cls, name: str) -> tuple[str, ...]:
    for const in _CONSTANTS.get(name, ()):
        for module in modules:
            value = getattr(module, const, None)
            if isinstance(value, (tuple, list, frozenset, set)) and value:
                return (tuple(sorted(value)) if isinstance(value, (set, frozenset))
                        else tuple(value))
    try:
        hint = typing.get_type_hints(options_cls).get(name)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back below
        hint = None
    args = [a for a in typing.get_args(hint) if isinstance(a, str)]
    if typing.get_origin(hint) is typing.Literal and args:
        return tuple(args)
    return _FALLBACK.get(name, ())


def discover(block_sizes: tuple[int, ...] = ()) -> list[Variant]:
    """Every (target, sparse[, block_size]) the installed compiler offers; the default
    variant first."""
    from attndsl.lower import compile as c
    from attndsl.lower import targets as table

    options_cls = getattr(c, "CompileOptions", None)
    if options_cls is None:
        return [Variant(is_default=True)]
    fields = {f.name for f in dataclasses.fields(options_cls)}
    default = options_cls()
    targets = _choices((table, c), options_cls, "target") if "target" in fields else (None,)
    sparse = _choices((table, c), options_cls, "sparse") if "sparse" in fields else (None,)
    sizes = (None, *block_sizes) if "block_size" in fields else (None,)
    out = []
    for t in targets:
        for s in sparse:
            for b in sizes:  # tile sizes only for the forced block-sparse strategy
                if b is not None and (s != "block" or t not in (None, "portable")):
                    continue
                is_default = (b is None and getattr(default, "target", None) in (t, None)
                              and getattr(default, "sparse", None) in (s, None))
                out.append(Variant(t, s, b, is_default))
    return sorted(out, key=lambda v: not v.is_default)


def compile_variant(variant: Variant, spec_text: str,
                    seq_hint: int | None = None) -> tuple[Any, list[str]]:
    """The ONNX ModelProto of ``spec_text`` compiled with ``variant``, and the per-block
    explanation lines when the compiler gives them. ``seq_hint`` (dynamic specs) is the
    length the strategy choice should cost, where the compiler takes one."""
    from attndsl.api import parse_spec
    from attndsl.lower import compile as c

    model = parse_spec(spec_text, "bench.yaml")
    params = inspect.signature(c.compile_model).parameters
    options_cls = getattr(c, "CompileOptions", None)
    kwargs: dict[str, Any] = {}
    wanted = variant.options()
    if seq_hint is not None and options_cls is not None and "seq_hint" in {
            f.name for f in dataclasses.fields(options_cls)}:
        wanted["seq_hint"] = seq_hint
    if options_cls is not None and wanted:
        opts = options_cls(**wanted)
        if "options" in params:
            kwargs["options"] = opts
        else:
            kwargs.update({k: v for k, v in wanted.items() if k in params})
    explain_fn = getattr(c, "compile_with_explanations", None)
    if explain_fn is not None:
        proto, explanations = explain_fn(model, **kwargs)
        return proto, [_line(e) for e in explanations]
    return c.compile_model(model, **kwargs), []


def model_digest(proto: Any) -> str:
    """A hash of what runs: the model without its metadata (which names the target), so a
    variant that fell back to another's lowering hashes the same."""
    import hashlib

    bare = type(proto)()
    bare.CopyFrom(proto)
    del bare.metadata_props[:]
    return hashlib.sha256(bare.SerializeToString(deterministic=True)).hexdigest()[:16]


def _line(e: Any) -> str:
    if dataclasses.is_dataclass(e):
        d = dataclasses.asdict(e)
        return f"{d.get('block', '?')}: {d.get('lowering', '?')} ({d.get('reason', '')})"
    return str(e)
