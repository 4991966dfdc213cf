"""``bias`` as a mapping: biases on some of the four projections (Qwen2: q, k, v; Whisper: q,
v, o -- ``WhisperAttention``'s ``k_proj`` has no bias).

``bias`` is also a core block key: ``bias: true`` puts a bias on all four projections
(``Block.bias``) and ``bias: false`` on none. A mapping names the projections that have one,
``bias: {q: true, k: true, v: true}`` (``.attn``: ``bias q = true, k = true, v = true``);
an option left out is ``false``. Weights ``<block>.{q,k,v,o}_proj.bias`` for the listed
projections only.

The feature has no hook rules: a bias belongs to the projection's Linear, which every engine
applies itself, asking ``Block.has_bias(proj)`` (``ir/nodes.py``) -- the reference, the
portable lowering, the ort target's projections before a fused kernel (so the kernels stay
available: ``ort`` says ``projections``), ``fuse-qkv`` (a fused bias with zeros for the rows of
a projection without one: adding 0 is exact) and ``fold-scale`` (scales the q bias with the q
rows when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option

PROJECTIONS = ("q", "k", "v", "o")


@dataclass(frozen=True, slots=True)
class ProjectionBias(BlockNode):
    q: bool = False
    k: bool = False
    v: bool = False
    o: bool = False
    span: Span | None = span_field()


def _make(values: dict[str, object], ctx) -> ProjectionBias | None:
    listed = [p for p in PROJECTIONS if values[p]]
    if not ctx.project:
        ctx.err("bias needs projections (project: true): a core-mode block has no weights",
                ctx.span(None), "drop 'bias' or set project: true")
        return None
    if not listed:
        ctx.err("bias lists no projection", ctx.span(None),
                "set some of q, k, v, o to true, or write bias: false")
        return None
    return ProjectionBias(*(bool(values[p]) for p in PROJECTIONS), span=ctx.span(None))


def _summary(n: ProjectionBias, block) -> str:
    return "on " + ", ".join(f"{p}_proj" for p in PROJECTIONS if getattr(n, p))


FEATURE = BlockFeature(
    key="bias", node=ProjectionBias,
    options=tuple(Option(p, "bool", False, doc=f"a bias on {p}_proj") for p in PROJECTIONS),
    doc="biases on the listed projections (bias: true is all four)",
    example="{q: true, k: true, v: true}",
    make=_make,
    format=lambda n: tuple((p, getattr(n, p)) for p in PROJECTIONS),
    shorthand=lambda value: None,  # true / false are the core key's
    summary=_summary,
    ort=lambda n, block: "projections",
    passes=frozenset({"fold-scale", "fuse-qkv"}),
)
