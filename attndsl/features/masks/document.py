"""``document(ids)``: ``ids[b, q] == ids[b, k]`` for int ids ``[batch, k_len]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import (
    UNBOUNDED,
    Algebra,
    Feature,
    Mask,
    Param,
    Tiles,
    constant,
    span_field,
    witness_diag,
)


@dataclass(frozen=True, slots=True)
class Document(Mask):
    """``ids[b, q] == ids[b, k]``; ``input`` is int64 ``[batch, k_len]``."""

    input: str
    span: Span | None = span_field()


def _eval(m: Document, ev):
    ids = np.asarray(ev.inputs[m.input]).astype(np.int64)  # [batch, k_len]
    qi = ids[:, ev.q[0, 0, :, 0]]
    ki = ids[:, ev.k[0, 0, 0, :]]
    return (qi[:, :, None] == ki[:, None, :])[:, None]


def _lower(m: Document, ctx) -> str:  # ids [B, k_len] at the query and key positions
    g, p = ctx.g, ctx.pos
    ids = ctx.int64_input(m.input)
    ids_q = g.unsqueeze(g.gather(ids, p.index(p.q_col), axis=1), [1])  # [B, 1, Sq, 1]
    ids_k = g.unsqueeze(g.gather(ids, p.index(p.k_row), axis=1), [1])  # [B, 1, 1, Sk]
    return g.equal(ids_q, ids_k)


def _check(m: Document, ctx) -> None:
    ids = ctx.check_input(m.input, m.span, "document", ("int64", "int32"), (2,))
    if not ctx.self_attn:
        ctx.err("document(ids) needs self-attention (one ids tensor for queries and "
                "keys)", m.span)
    elif ids is not None and len(ids.shape) == 2:
        ctx.check_ids_length(ids, m.span, ctx.k.seq, ctx.cache)
    sq, sk = ctx.size(ctx.q.seq), ctx.size(ctx.k.seq)
    if ctx.self_attn and not ctx.cache and sq is not None and sk is not None and sq > sk:
        ctx.err(f"document(ids) reads ids at query positions: '{ctx.q.name}' has "
                f"{sq} queries but '{ctx.k.name}' only {sk} keys", m.span,
                "ids are [batch, k_len]; queries may not outnumber keys")


FEATURE = Feature(
    name="document", kind="mask", node=Document,
    params=(Param("ids", "input"),), doc="ids[b, q] == ids[b, k]",
    check=_check,
    format=lambda m: f"document({m.input})",
    eval=_eval,
    witnesses=witness_diag,
    algebra=Algebra(rank=130),
    tiles=Tiles(support=constant("i")),
    bounds=UNBOUNDED,
    lower=_lower,
    ort=constant("input"),
    viz=constant(0),
    inputs=lambda m: ((m.input, "ids"),),
)
