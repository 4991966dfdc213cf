"""``sinks``: attention sinks, one virtual key per head that every query may attend to and
whose value is zero (gpt-oss; "softmax plus one").

``sinks: {kind: learned}`` (``sinks: true``, ``sinks: learned``) gives each head a learned
sink logit, the weight ``<block>.sinks`` [heads] (gpt-oss ``GptOssAttention.sinks``);
``sinks: constant`` (``{kind: constant}``) a sink of logit 0 in every head, no weight
("softmax plus one", the fused kernels' ``smooth_softmax``). The row softmax over the allowed
keys then also counts the sink, as transformers' ``GptOssAttention`` eager path computes it
(``features/kernels.py``, ``softmax_with_sink``)::

    p_j = exp(l_j - m) / (exp(sink_h - m) + sum_{allowed k} exp(l_k - m)),
    m = max(sink_h, max_{allowed k} l_k)

and the sink's own probability is dropped: rows sum to less than 1, and a row with no allowed
key gives the sink all the mass, so its output is 0 (as without sinks).

Hook point: ``softmax`` (it replaces the row softmax). The dense path and each block-sparse
strategy call it on their own pair shapes ([B, H, Sq, Sk] dense and chunks, [B, H, tiles, t,
keys] band and tiles); every strategy gives one query row all of its keys in a single piece
(a band tile gathers the whole window of its rows, a chunk the keys up to its last query, a
tile group its whole list), so each row counts the sink exactly once. The sink is read in
float32 (float16 models too: the portable lowering computes the softmax in float32).

``--target ort``: GroupQueryAttention's ``head_sink`` input (learned; in the model dtype) and
``smooth_softmax`` attribute (constant) compute the same softmax in ONNX Runtime 1.32
(``tests/test_feature_sinks.py`` checks the numbers), so a block whose other settings map onto
GQA keeps the fused kernel; MultiHeadAttention and ONNX Attention have no sink and such blocks
fall back to the portable lowering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from .. import kernels
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option

KINDS = ("learned", "constant")


@dataclass(frozen=True, slots=True)
class Sinks(BlockNode):
    kind: str = "learned"  # "learned": weight <block>.sinks [heads]; "constant": logit 0
    span: Span | None = span_field()


def weight_name(block_name: str) -> str:
    """The per-head sink logits, ``<block>.sinks`` [heads] (gpt-oss's name)."""
    return f"{block_name}.sinks"


# ------------------------------------------------------------------ reference


def _reference(n: Sinks, st, s: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The logits ``s`` [B, H, Sq, Sk] with the sink: ``kernels.softmax_with_sink``, the
    kernel proven against transformers' ``GptOssAttention`` (tests/test_feature_kernels.py)."""
    sink = st.weight(weight_name(st.block.name)) if n.kind == "learned" else 0.0
    return kernels.softmax_with_sink(s, allowed, sink)


# ------------------------------------------------------------------ portable lowering


def _portable(n: Sinks, st, s: str, allowed: str | None) -> str:
    """Softmax with a sink of the logits ``s`` (-inf where disallowed) in float32. The
    disallowed cells need no mask here: ``exp(-inf - m)`` is 0 since ``m`` (at least the sink)
    is finite, which also makes a row without allowed keys all zeros."""
    g = st.g
    with g.scope("sinks"):
        if n.kind == "learned":
            # [H] -> [1, H, 1, ..., 1] with as many trailing ones as the logits have axes after
            # the head axis (4-D dense and chunks, 5-D band and tiles)
            trailing = g.add(g.mul(g.shape(s, 2), g.i64(0)), g.i64(1))
            shape = g.concat([g.i64(1, st.block.heads), trailing], axis=0)
            sink = g.reshape(st.float32(weight_name(st.block.name)), shape)
        else:
            sink = g.scalar(0.0, np.float32)
        m = g.op("Max", g.reduce("ReduceMax", s, [-1]), sink)
        e = g.op("Exp", g.sub(s, m))
        total = g.add(g.reduce("ReduceSum", e, [-1]), g.op("Exp", g.sub(sink, m)))
        return g.div(e, total)


# ------------------------------------------------------------------ build


def _make(values: dict[str, object], ctx) -> Sinks | None:
    kind = values["kind"]
    if kind == "learned" and not ctx.project:
        ctx.err("learned sinks are a weight (<block>.sinks), and a core-mode block "
                "(project: false) has no weights", ctx.span(None),
                "use 'sinks: constant' (a sink of logit 0) or project: true")
        return None
    return Sinks(kind, span=ctx.span(None))


def _shorthand(value: object) -> dict[str, object] | None:
    if value is True or value is None:
        return {}
    if isinstance(value, str) and value in KINDS:
        return {"kind": value}
    return None


def _summary(n: Sinks, block) -> str:
    if n.kind == "learned":
        return f"learned sink logit per head, weight [{block.heads}]"
    return "constant sink logit 0 (softmax plus one)"


def _ort(n: Sinks, block) -> str:
    # GroupQueryAttention computes it (the only fused kernel with a sink): the lowering maps
    # "head_sink" onto its head_sink input (learned) or smooth_softmax attribute (constant)
    return "head_sink"


FEATURE = BlockFeature(
    key="sinks", node=Sinks,
    options=(Option("kind", "choice", "learned", choices=KINDS,
                    doc="learned: one logit per head (weight <block>.sinks); constant: 0"),),
    doc="attention sinks: a virtual key of value 0 per head counted in the softmax",
    example="{kind: learned}",
    make=_make,
    format=lambda n: (("kind", n.kind),),
    shorthand=_shorthand,
    weights=lambda n, block: ({weight_name(block.name): (block.heads,)}
                              if n.kind == "learned" else {}),
    init=lambda name, shape, rng: rng.standard_normal(shape),
    summary=_summary,
    reference={"softmax": _reference},
    portable={"softmax": _portable},
    ort=_ort,
    passes=frozenset({"fold-scale", "fuse-qkv"}),
)
