"""``rope``: rotary position embedding of queries and keys (Su et al.; Hugging Face Llama).

``rope: {theta: 10000.0, dim: <head_dim>, interleaved: false}`` rotates the first ``dim``
features of each query and key head by the angles ``pos * theta ** (-2i / dim)``: in halves
(``x[:dim/2]`` with ``x[dim/2:dim]``, Llama / GPT-NeoX) or in interleaved pairs (``x[2i]``
with ``x[2i+1]``, GPT-J). Queries rotate at their positions (``past_len + i`` for
self-attention, ``i`` for cross-attention), new keys at ``past_len + j``; cached keys are
stored rotated. ``rope: true`` (or a bare ``rope``) takes the defaults, ``rope: false`` is
no RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option


@dataclass(frozen=True, slots=True)
class Rope(BlockNode):
    theta: float = 10000.0
    dim: int = 0  # features rotated per head (<= head_dim, even)
    interleaved: bool = False
    span: Span | None = span_field()


def rope_inv_freq(dim: int, theta: float) -> np.ndarray:
    """``1 / theta ** (2i / dim)`` for i < dim / 2 (Hugging Face / Llama)."""
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def apply_rope(x: np.ndarray, pos: np.ndarray, theta: float, dim: int,
               interleaved: bool) -> np.ndarray:
    """Rotate the first ``dim`` features of each head of ``x`` [B, H, S, D] at positions
    ``pos`` [S], in float64 (the reference)."""
    ang = pos[:, None].astype(np.float64) * rope_inv_freq(dim, theta)[None, :]  # [S, dim/2]
    cos, sin = np.cos(ang), np.sin(ang)
    rot, rest = x[..., :dim], x[..., dim:]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = np.empty_like(rot)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
    else:
        half = dim // 2
        a, b = rot[..., :half], rot[..., half:]
        out = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return np.concatenate([out, rest], axis=-1)


def _reference(r: Rope, st) -> None:
    st.q = apply_rope(st.q, st.q_pos, r.theta, r.dim, r.interleaved)
    st.k = apply_rope(st.k, st.k_pos_new, r.theta, r.dim, r.interleaved)


def rope_tables(ctx, positions: str, r: Rope) -> tuple[str, str]:
    """cos and sin of the rotation angles [S, dim/2] (float32), built once per positions
    tensor and (theta, dim) through ``ctx.memo``; ``ctx`` is the portable lowering or its
    block state (``ctx.g``, ``ctx.memo``, ``ctx.FLOAT``)."""
    g = ctx.g

    def build() -> tuple[str, str]:
        inv = g.const(rope_inv_freq(r.dim, r.theta).astype(np.float32), np.float32)
        angles = g.mul(g.unsqueeze(g.cast(positions, ctx.FLOAT), [1]), inv)
        return g.op("Cos", angles), g.op("Sin", angles)

    return ctx.memo(("rope", positions, r.theta, r.dim), build)


def rotate(ctx, x: str, positions: str, r: Rope, head_dim: int) -> str:
    """Rotate the first ``r.dim`` features of each head of x [B, n, S, D] (float32)."""
    g = ctx.g
    dim, half = r.dim, r.dim // 2
    with g.scope("rope"):
        cos, sin = rope_tables(ctx, positions, r)  # [S, dim/2]
        rot = x if dim == head_dim else g.slice(x, [0], [dim], [3])
        if r.interleaved:
            pairs = g.reshape(rot, [0, 0, 0, half, 2])
            a, c = g.slice(pairs, [0], [1], [4]), g.slice(pairs, [1], [2], [4])
            cos, sin = g.unsqueeze(cos, [2]), g.unsqueeze(sin, [2])  # [S, dim/2, 1]
        else:
            a, c = g.slice(rot, [0], [half], [3]), g.slice(rot, [half], [dim], [3])
        first = g.sub(g.mul(a, cos), g.mul(c, sin))
        second = g.add(g.mul(c, cos), g.mul(a, sin))
        out = g.concat([first, second], axis=-1)
        if r.interleaved:
            out = g.reshape(out, [0, 0, 0, dim])
        if dim < head_dim:
            out = g.concat([out, g.slice(x, [dim], [head_dim], [3])], axis=-1)
        return out


def _portable(r: Rope, st) -> None:
    b = st.block
    st.q = rotate(st, st.q, st.pos.q, r, b.head_dim)
    st.k = rotate(st, st.k, st.pos.k_new, r, b.head_dim)


def _make(values: dict[str, object], ctx) -> Rope | None:
    head_dim = ctx.head_dim
    dim = values["dim"]
    if dim is None:
        if head_dim % 2:
            ctx.err(f"rope needs an even head_dim (got {head_dim})", ctx.span(None),
                    "set rope dim")
            return None
        dim = head_dim
    elif dim > head_dim or dim % 2:
        ctx.err(f"rope dim must be an even integer in 2..{head_dim}, got {dim!r}",
                ctx.span("dim"))
        return None
    return Rope(values["theta"], dim, values["interleaved"], span=ctx.span(None))


def _summary(r: Rope, block) -> str:
    return f"theta={r.theta:g}, dim={r.dim}{', interleaved' if r.interleaved else ''}"


FEATURE = BlockFeature(
    key="rope", node=Rope,
    options=(Option("theta", "float", 10000.0, doc="base of the inverse frequencies"),
             Option("dim", "int", None, minimum=1, doc="features rotated per head (even)"),
             Option("interleaved", "bool", False, doc="rotate pairs (2i, 2i+1), not halves")),
    doc="rotary position embedding of queries and keys", example="{theta: 10000.0}",
    make=_make,
    format=lambda r: (("theta", r.theta), ("dim", r.dim), ("interleaved", r.interleaved)),
    summary=_summary, listed=True,
    reference={"rope": _reference},
    portable={"rope": _portable},
    ort=lambda r, block: "rotary",
    passes=frozenset({"fold-scale", "fuse-qkv"}),  # a rotation is linear in q
)
