"""``qk_norm``: normalisation of queries and keys (Qwen3, Gemma 3, OLMo 2, Cohere, StableLM,
Llama 4), as transformers' modeling code computes it (``features/kernels.py``).

``qk_norm: {kind: rms, eps: 1e-6, scope: head, weight: shared, offset: 0.0, bias: false,
after_rope: false}``; ``qk_norm: rms`` / ``layer`` / ``l2`` picks the kind with the other
defaults, ``qk_norm: true`` is ``rms``. For each of q and k (v is not normalised):

- ``rms``: ``x / sqrt(mean(x^2) + eps) * (offset + w)`` (Qwen3 ``offset 0``; Gemma 3
  ``offset 1``: its ``(1 + w)``);
- ``layer``: ``(x - mean) / sqrt(var + eps) * w (+ b)``, biased variance (Cohere, StableLM);
- ``l2``: ``x / sqrt(mean(x^2) + eps)``, no weight (Llama 4's ``L2Norm``, which despite the
  name divides by the root mean square).

``scope: head`` normalises each head over ``head_dim``; ``scope: width`` the whole projected
width before the head split (OLMo 2). ``weight``: ``shared`` (one ``[head_dim]`` vector for
all heads: Qwen3, Gemma 3), ``per_head`` (``[heads, head_dim]`` / ``[kv_heads, head_dim]``:
Cohere, StableLM; with ``scope: width`` one value per projected feature, ``[heads*head_dim]``
/ ``[kv_heads*head_dim]``: OLMo 2) or ``none``. Weights ``<block>.q_norm.weight`` and
``<block>.k_norm.weight`` (and ``.bias`` for a LayerNorm with ``bias: true``). ``eps``
defaults to 1e-6 (1e-5 for ``layer``). ``after_rope: true`` normalises after RoPE (Llama 4).

Hook points: ``projected`` (``scope: width``), ``heads`` (before RoPE) or ``post_rope``. The
keys are cached normalised. The portable lowering normalises in float32 (the per-head q and k
are float32 there in every model dtype); with ``scope: width`` a float16 model casts the
normalised width back to float16 before the head split, as OLMo 2 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from .. import kernels
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option

KINDS = ("rms", "layer", "l2")


@dataclass(frozen=True, slots=True)
class QKNorm(BlockNode):
    kind: str = "rms"
    eps: float = 1e-6
    scope: str = "head"  # "head" | "width"
    weight: str = "shared"  # "shared" | "per_head" | "none"
    offset: float = 0.0
    bias: bool = False
    after_rope: bool = False
    span: Span | None = span_field()


def _hook(n: QKNorm) -> str:
    """The one hook point this node runs at."""
    if n.scope == "width":
        return "projected"
    return "post_rope" if n.after_rope else "heads"


def _names(block_name: str, which: str) -> tuple[str, str]:
    return f"{block_name}.{which}_norm.weight", f"{block_name}.{which}_norm.bias"


def _shape(n: QKNorm, block, heads: int) -> tuple[int, ...]:
    d = block.head_dim
    if n.scope == "width":
        return (heads * d,)
    return (heads, d) if n.weight == "per_head" else (d,)


def _weights(n: QKNorm, block) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    if n.weight == "none":
        return out
    for which, heads in (("q", block.heads), ("k", block.kv_heads)):
        weight, bias = _names(block.name, which)
        out[weight] = _shape(n, block, heads)
        if n.bias:
            out[bias] = _shape(n, block, heads)
    return out


def _init(name: str, shape: tuple[int, ...], rng) -> np.ndarray:
    """Seeded norm parameters: weights ``1 + N(0, 0.1)`` (near a norm's identity, apart
    enough to tell features apart), biases ``N(0, 0.1)``."""
    base = 0.0 if name.endswith(".bias") else 1.0
    return base + 0.1 * rng.standard_normal(shape)


# ------------------------------------------------------------------ reference


def _reference_rule(hook: str):
    def rule(n: QKNorm, st) -> None:
        if _hook(n) != hook:
            return
        b = st.block
        spec = kernels.QKNorm(n.kind, n.eps, n.scope, n.offset, n.after_rope)
        for which in ("q", "k"):
            weight, bias = _names(b.name, which)
            w = st.weight(weight) if n.weight != "none" else None
            bb = st.weight(bias) if n.bias else None
            setattr(st, which, kernels.qk_norm(getattr(st, which), spec, w, bb))

    return rule


# ------------------------------------------------------------------ portable lowering


def _normalise(n: QKNorm, st, x: str, which: str) -> str:
    """x float32, [B, n, S, D] (scope head) or [B, S, n*D] (scope width)."""
    g = st.g
    with g.scope(f"{which}_norm"):
        if n.kind == "layer":
            x = g.sub(x, g.reduce("ReduceMean", x, [-1]))
        ms = g.reduce("ReduceMean", g.mul(x, x), [-1])
        y = g.div(x, g.op("Sqrt", g.add(ms, g.scalar(n.eps, np.float32))))
        if n.weight == "none":
            return y
        weight, bias = _names(st.block.name, which)
        per_head = n.weight == "per_head" and n.scope == "head"

        def param(name: str) -> str:
            p = st.float32(name)
            return g.unsqueeze(p, [1]) if per_head else p  # [n, D] -> [n, 1, D]

        w = param(weight)
        if n.offset:
            w = g.add(w, g.scalar(n.offset, np.float32))
        y = g.mul(y, w)
        return g.add(y, param(bias)) if n.bias else y


def _portable_rule(hook: str):
    def rule(n: QKNorm, st) -> None:
        if _hook(n) != hook:
            return
        for which in ("q", "k"):
            x = getattr(st, which)
            if hook == "projected":  # model dtype, before the head split
                x = st.to_model_dtype(_normalise(n, st, st.to_float32(x), which))
            else:
                x = _normalise(n, st, x, which)
            setattr(st, which, x)

    return rule


# ------------------------------------------------------------------ build


def _make(values: dict[str, object], ctx) -> QKNorm | None:
    kind, scope, after = values["kind"], values["scope"], values["after_rope"]
    weight = values["weight"]
    if weight is None:
        weight = "none" if kind == "l2" else "per_head" if scope == "width" else "shared"
    eps = values["eps"] if values["eps"] is not None else (1e-5 if kind == "layer" else 1e-6)
    ok = True

    def bad(msg: str, option: str | None, hint: str | None = None) -> None:
        nonlocal ok
        ok = False
        ctx.err(msg, ctx.span(option), hint)

    if kind == "l2" and weight != "none":
        bad("qk_norm kind l2 has no weight", "weight",
            "drop 'weight' (or use kind rms for a learned weight)")
    if scope == "width" and weight == "shared":
        bad("qk_norm scope width has one weight per projected feature, not one shared by "
            "the heads", "weight", "use weight per_head ([heads*head_dim]) or none")
    if scope == "width" and after:
        bad("qk_norm scope width normalises before the head split, so before RoPE",
            "after_rope", "use scope head with after_rope: true")
    if values["offset"] != 0.0 and (kind != "rms" or weight == "none"):
        bad("qk_norm offset is for kind rms with a weight (Gemma's 1 + w)", "offset")
    if values["bias"] and (kind != "layer" or weight == "none"):
        bad("qk_norm bias is for kind layer with a weight", "bias")
    if weight != "none" and not ctx.project:
        bad("qk_norm weights need projections (project: true): a core-mode block has no "
            "weights", None, "use kind l2 or weight none in core mode")
    if not ok:
        return None
    return QKNorm(kind, eps, scope, weight, values["offset"], values["bias"], after,
                  span=ctx.span(None))


def _shorthand(value: object) -> dict[str, object] | None:
    if value is True or value is None:
        return {}
    if isinstance(value, str) and value in KINDS:
        return {"kind": value}
    return None


def _summary(n: QKNorm, block) -> str:
    where = "head_dim" if n.scope == "head" else "the projected width"
    if n.weight == "none":
        w = "no weight"
    else:
        q, k = (_shape(n, block, h) for h in (block.heads, block.kv_heads))
        w = f"weight {n.weight} q {list(q)} k {list(k)}"
        w += f" (offset {n.offset:g})" if n.offset else ""
        w += " + bias" if n.bias else ""
    return (f"{n.kind} over {where}, {w}, eps {n.eps:g}, "
            f"{'after' if n.after_rope else 'before'} RoPE")


FEATURE = BlockFeature(
    key="qk_norm", node=QKNorm,
    options=(Option("kind", "choice", "rms", choices=KINDS, doc="rms, layer or l2"),
             Option("eps", "float", None, doc="added to the mean square (variance)"),
             Option("scope", "choice", "head", choices=("head", "width"),
                    doc="each head over head_dim, or the whole projected width"),
             Option("weight", "choice", None, choices=("shared", "per_head", "none"),
                    doc="one [head_dim] weight for all heads, one per head, or none"),
             Option("offset", "number", 0.0, doc="rms: multiply by offset + w"),
             Option("bias", "bool", False, doc="layer: add a learned bias"),
             Option("after_rope", "bool", False, doc="normalise after RoPE (Llama 4)")),
    doc="RMSNorm / LayerNorm / L2 normalisation of queries and keys",
    example="{kind: rms, eps: 1e-6}",
    make=_make,
    format=lambda n: (("kind", n.kind), ("eps", n.eps), ("scope", n.scope),
                      ("weight", n.weight), ("offset", n.offset), ("bias", n.bias),
                      ("after_rope", n.after_rope)),
    shorthand=_shorthand,
    weights=_weights,
    init=_init,
    summary=_summary,
    reference={h: _reference_rule(h) for h in ("projected", "heads", "post_rope")},
    portable={h: _portable_rule(h) for h in ("projected", "heads", "post_rope")},
    ort=lambda n, block: "no fused attention kernel normalises queries and keys (qk_norm)",
)
