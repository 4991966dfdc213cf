"""``rope``: rotary position embedding of queries and keys (Su et al.; Hugging Face Llama),
with the RoPE scalings of Hugging Face transformers and explicit position ids.

``rope: {theta: 10000.0, dim: <head_dim>, interleaved: false}`` rotates the first ``dim``
features of each query and key head by the angles ``pos * inv_i``, ``inv_i = theta ** (-2i /
dim)``: in halves (``x[:dim/2]`` with ``x[dim/2:dim]``, Llama / GPT-NeoX) or in interleaved
pairs (``x[2i]`` with ``x[2i+1]``, GPT-J). Queries rotate at their positions (``past_len +
i`` for self-attention, ``i`` for cross-attention), new keys at ``past_len + j``; cached keys
are stored rotated. ``rope: true`` (or a bare ``rope``) takes the defaults, ``rope: false`` is
no RoPE.

Scaling (``scaling: linear | dynamic | llama3 | yarn | longrope`` with the options of
transformers' ``rope_parameters``): the inverse frequencies and the attention factor (which
multiplies cos and sin) are transformers 5.23's, computed by ``features/rope_scaling.py``
(its docstring has the formulas), in float32 as transformers computes them. ``linear``,
``llama3`` and ``yarn`` are constant tables. ``dynamic`` and ``longrope`` depend on the
run-time length ``L`` = the largest position of the call + 1 (with position ids:
``max(position_ids) + 1`` over the whole batch, as transformers; without: ``past_len + q_len``
for self-attention, ``max(q_len, past_len + k_len)`` for cross-attention): ``longrope`` uses
``long_factor`` when ``L > original_max_position_embeddings``, else ``short_factor``;
``dynamic`` uses the NTK base ``theta * (factor * L / M - (factor - 1)) ** (dim / (dim -
2))`` (float32, ``M = max_position_embeddings``) when ``L > M``, else the plain table. A
graph is stateless: each call computes the frequencies of its own ``L``, which is what a
fresh transformers module computes for one full forward. transformers' ``dynamic`` module is
stateful (it keeps the largest ``L`` seen), and a KV cache keeps keys rotated with the
frequencies of the step that wrote them, so prefill-then-decode past ``M`` (``dynamic``) or
past the original length (``longrope``) equals neither one full run nor transformers'
stateful decoding; below those lengths it equals both.

Position ids (``positions: NAME``): an int64 (or int32) input ``[batch, seq]`` holding the
positions of the new tokens, read instead of ``past_len + i`` for the queries and the new
keys (left-padded batches, packed sequences); masks keep using index positions.
Self-attention only (queries and keys are the same tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...source import Span
from ..base import span_field
from ..block_base import BlockFeature, BlockNode, Option
from ..rope_scaling import ROPE_TYPES, RopeScaling, attention_factor, inv_freq
from ..rope_scaling import validate_rope_scaling as _validate

# the scaling options, as transformers' rope_parameters name them (rope_scaling.RopeScaling)
SCALING_OPTIONS = (
    Option("factor", "float", None, doc="context extension factor (>= 1)"),
    Option("low_freq_factor", "number", None, doc="llama3: low-frequency wavelength factor"),
    Option("high_freq_factor", "number", None, doc="llama3: high-frequency wavelength factor"),
    Option("original_max_position_embeddings", "int", None, minimum=1,
           doc="the length the model was trained at"),
    Option("max_position_embeddings", "int", None, minimum=1,
           doc="the model's length (dynamic's M; yarn/longrope factor = max / original)"),
    Option("beta_fast", "number", None, doc="yarn: fast rotation bound (default 32)"),
    Option("beta_slow", "number", None, doc="yarn: slow rotation bound (default 1)"),
    Option("attention_factor", "number", None, doc="yarn/longrope: factor of cos and sin"),
    Option("mscale", "number", None, doc="yarn: mscale (DeepSeek)"),
    Option("mscale_all_dim", "number", None, doc="yarn: mscale_all_dim (DeepSeek)"),
    Option("truncate", "bool", None, doc="yarn: floor/ceil the correction range (default true)"),
    Option("short_factor", "floats", None, doc="longrope: per-frequency factors, L <= original"),
    Option("long_factor", "floats", None, doc="longrope: per-frequency factors, L > original"),
)
_SCALING_KEYS = tuple(o.name for o in SCALING_OPTIONS)
# ONNX element types (onnx.TensorProto values; features/ imports no onnx)
_INT64, _DOUBLE = 7, 11


@dataclass(frozen=True, slots=True)
class Rope(BlockNode):
    theta: float = 10000.0
    dim: int = 0  # features rotated per head (<= head_dim, even)
    interleaved: bool = False
    scaling: RopeScaling | None = None  # transformers' rope_parameters (None: plain RoPE)
    positions: str | None = None  # an int [batch, seq] input of positions, else past_len + i
    span: Span | None = span_field()

    @property
    def runtime_length(self) -> bool:
        """Whether the frequencies depend on the run-time length (dynamic, longrope)."""
        return self.scaling is not None and self.scaling.rope_type in ("dynamic", "longrope")


def rope_inv_freq(dim: int, theta: float) -> np.ndarray:
    """``1 / theta ** (2i / dim)`` for i < dim / 2 (Hugging Face / Llama)."""
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def frequencies(r: Rope, length: int) -> tuple[np.ndarray, float]:
    """The inverse frequencies [dim/2] and the attention factor of one call whose run-time
    length is ``length`` (the largest position + 1): float64 for plain RoPE, transformers'
    float32 values (as float64) for a scaling."""
    s = r.scaling
    if s is None:
        return rope_inv_freq(r.dim, r.theta), 1.0
    if s.rope_type == "dynamic":
        grown = length > s.max_position_embeddings
        inv = inv_freq(s, r.theta, r.dim, length if grown else None, runtime=grown)
    else:  # longrope reads the length (long factors when > original), the others ignore it
        inv = inv_freq(s, r.theta, r.dim, length)
    return inv.astype(np.float64), float(attention_factor(s))


def rotate64(x: np.ndarray, pos: np.ndarray, inv: np.ndarray, factor: float, dim: int,
             interleaved: bool) -> np.ndarray:
    """Rotate the first ``dim`` features of each head of ``x`` [B, H, S, D] at positions
    ``pos`` ([S], or [B, S] position ids) by ``pos * inv``, cos and sin times ``factor``;
    float64."""
    ang = pos.astype(np.float64)[..., None] * inv[None, :]  # [S, dim/2] or [B, S, dim/2]
    if ang.ndim == 3:
        ang = ang[:, None]  # [B, 1, S, dim/2]: every head of a row
    cos, sin = np.cos(ang), np.sin(ang)
    if factor != 1.0:
        cos, sin = cos * factor, sin * factor
    rot, rest = x[..., :dim], x[..., dim:]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = np.empty(np.broadcast_shapes(rot.shape, (*cos.shape[:-1], dim)))
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
    else:
        half = dim // 2
        a, b = rot[..., :half], rot[..., half:]
        out = np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)
    return np.concatenate([out, rest], axis=-1)


def apply_rope(x: np.ndarray, pos: np.ndarray, theta: float, dim: int,
               interleaved: bool) -> np.ndarray:
    """Rotate the first ``dim`` features of each head of ``x`` [B, H, S, D] at positions
    ``pos`` [S], in float64 (the reference, plain RoPE)."""
    return rotate64(x, pos, rope_inv_freq(dim, theta), 1.0, dim, interleaved)


def _reference(r: Rope, st) -> None:
    if r.scaling is None and r.positions is None:
        st.q = apply_rope(st.q, st.q_pos, r.theta, r.dim, r.interleaved)
        st.k = apply_rope(st.k, st.k_pos_new, r.theta, r.dim, r.interleaved)
        return
    b = st.block
    if r.positions is not None:
        q_pos = k_pos = np.asarray(st.inputs[r.positions]).astype(np.int64)  # [B, S]
        length = int(q_pos.max()) + 1 if q_pos.size else 0
    else:
        q_pos, k_pos = st.q_pos, st.k_pos_new
        past = st.past_len
        q_end = (past if b.self_attention else 0) + st.q.shape[2]
        length = max(q_end, past + st.k.shape[2])
    inv, factor = frequencies(r, length)
    st.q = rotate64(st.q, q_pos, inv, factor, r.dim, r.interleaved)
    st.k = rotate64(st.k, k_pos, inv, factor, r.dim, r.interleaved)


# ------------------------------------------------------------------ ONNX (portable lowering)

def _graph_inv_freq(ctx, r: Rope, length: str | None) -> str:
    """The float32 inverse frequencies [dim/2] of a scaled RoPE as a graph value: a constant,
    or for dynamic / longrope both tables and a ``Where`` on the run-time length ``length``
    (int64 scalar)."""
    g, s = ctx.g, r.scaling
    if s.rope_type == "longrope":
        orig = s.original_max_position_embeddings
        short = g.const(inv_freq(s, r.theta, r.dim, None), np.float32)
        long = g.const(inv_freq(s, r.theta, r.dim, orig + 1), np.float32)
        return g.where(g.op("Greater", length, g.scalar(orig, "int64")), long, short)
    init = g.const(inv_freq(s, r.theta, r.dim), np.float32)
    if s.rope_type != "dynamic":
        return init
    # transformers' forward: float32 arithmetic on the length tensor, the power's exponent in
    # double (torch keeps a Python float exponent in double: Pow runs in double here)
    m, f, d = s.max_position_embeddings, s.factor, r.dim
    grown = g.op("Greater", length, g.scalar(m, "int64"))
    big = g.cast(g.op("Max", length, g.scalar(m, "int64")), ctx.FLOAT)
    t = g.sub(g.div(g.mul(g.scalar(f, np.float32), big), g.scalar(m, np.float32)),
              g.scalar(f - 1, np.float32))
    t = g.cast(g.op("Pow", g.cast(t, _DOUBLE), g.scalar(d / (d - 2), np.float64)), ctx.FLOAT)
    base = g.mul(g.scalar(r.theta, np.float32), t)
    exps = (np.arange(0, d, 2, dtype=np.int64).astype(np.float32) / np.float32(d))
    dyn = g.op("Reciprocal", g.op("Pow", base, g.const(exps, np.float32)))
    return g.where(grown, dyn, init)


def rope_tables(ctx, positions: str, r: Rope, length: str | None = None) -> tuple[str, str]:
    """cos and sin of the rotation angles [S, dim/2] ([B, S, dim/2] for position ids)
    (float32, times the attention factor of a scaling), built once per positions tensor,
    RoPE and length through ``ctx.memo``; ``length`` is the run-time length (int64 scalar),
    needed by dynamic and longrope; ``ctx`` is the portable lowering or its block state
    (``ctx.g``, ``ctx.memo``, ``ctx.FLOAT``)."""
    g = ctx.g

    def build() -> tuple[str, str]:
        inv = g.const(rope_inv_freq(r.dim, r.theta).astype(np.float32), np.float32)
        angles = g.mul(g.unsqueeze(g.cast(positions, ctx.FLOAT), [1]), inv)
        return g.op("Cos", angles), g.op("Sin", angles)

    def build_scaled() -> tuple[str, str]:
        inv = (_graph_inv_freq(ctx, r, length) if r.scaling is not None else
               g.const(rope_inv_freq(r.dim, r.theta).astype(np.float32), np.float32))
        angles = g.mul(g.unsqueeze(g.cast(positions, ctx.FLOAT), [-1]), inv)
        cos, sin = g.op("Cos", angles), g.op("Sin", angles)
        factor = 1.0 if r.scaling is None else attention_factor(r.scaling)
        if factor != 1.0:  # float32 multiply after cos/sin, as transformers
            f = g.scalar(factor, np.float32)
            cos, sin = g.mul(cos, f), g.mul(sin, f)
        return cos, sin

    if r.scaling is None and r.positions is None:
        return ctx.memo(("rope", positions, r.theta, r.dim), build)
    return ctx.memo(("rope-scaled", positions, r, length if r.runtime_length else None),
                    build_scaled)


def run_length(g, pos, q_len: str) -> str:
    """The run-time length of a block without position ids (int64 scalar): the largest query
    or key position + 1, i.e. ``past_len + q_len`` for self-attention over one stream, else
    ``max(q_first + q_len, past_len + k_len)``; ``pos`` is the block's ``Positions``."""
    if pos.same_stream:
        return pos.k_total
    return g.op("Max", g.add(pos.q_first, q_len), pos.k_total)


def position_ids(ctx, r: Rope) -> tuple[str, str]:
    """The position ids input as int64 [B, S] and its run-time length ``max + 1`` (0 when
    empty: a -1 joins the values so ReduceMax never sees an empty tensor)."""
    g = ctx.g
    ids = r.positions
    if ctx.low.input_types[ids] != "int64":
        ids = g.cast(ids, _INT64)
    flat = g.concat([g.reshape(ids, [-1]), g.i64(-1)], axis=0)
    top = g.op("ReduceMax", flat, keepdims=0)
    return ids, g.add(top, g.scalar(1, "int64"))


def rotate(ctx, x: str, positions: str, r: Rope, head_dim: int,
           length: str | None = None) -> str:
    """Rotate the first ``r.dim`` features of each head of x [B, n, S, D] (float32) at
    ``positions`` ([S], or [B, S] when ``r.positions`` names position ids)."""
    g = ctx.g
    dim, half = r.dim, r.dim // 2
    with g.scope("rope"):
        cos, sin = rope_tables(ctx, positions, r, length)  # [S, dim/2] or [B, S, dim/2]
        if r.positions is not None:
            cos, sin = g.unsqueeze(cos, [1]), g.unsqueeze(sin, [1])  # [B, 1, S, dim/2]
        rot = x if dim == head_dim else g.slice(x, [0], [dim], [3])
        if r.interleaved:
            pairs = g.reshape(rot, [0, 0, 0, half, 2])
            a, c = g.slice(pairs, [0], [1], [4]), g.slice(pairs, [1], [2], [4])
            axis = 2 if r.positions is None else 4
            cos, sin = g.unsqueeze(cos, [axis]), g.unsqueeze(sin, [axis])  # [..., dim/2, 1]
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
    if r.positions is not None:
        ids, length = st.memo(("rope-ids", r.positions), lambda: position_ids(st, r))
        st.q = rotate(st, st.q, ids, r, b.head_dim, length)
        st.k = rotate(st, st.k, ids, r, b.head_dim, length)
        return
    length = run_length(st.g, st.pos, st.g.dim(st.q, 2)) if r.runtime_length else None
    st.q = rotate(st, st.q, st.pos.q, r, b.head_dim, length)  # (positions built in this
    st.k = rotate(st, st.k, st.pos.k_new, r, b.head_dim, length)  # order: stable graphs)


# ------------------------------------------------------------------ build

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
    scaling = _scaling(values, dim, ctx)
    if scaling is False:
        return None
    positions = values["positions"]
    if positions is not None:
        if not ctx.self_attn:
            ctx.err("rope positions need self-attention (the queries and the new keys are the "
                    "same tokens)", ctx.span("positions"),
                    "drop positions, or attend over the query stream (no key_value)")
            return None
        inp = ctx.builder.check_input(positions, ctx.span("positions"), "rope positions",
                                      ("int64", "int32"), (2,))
        if inp is None or inp.dtype not in ("int64", "int32") or len(inp.shape) != 2:
            return None
    return Rope(values["theta"], dim, values["interleaved"], scaling, positions,
                span=ctx.span(None))


def _scaling(values: dict[str, object], dim: int, ctx) -> RopeScaling | None | bool:
    """The checked scaling (None: plain RoPE; False after an error)."""
    given = {k: values[k] for k in _SCALING_KEYS if values[k] is not None}
    kind = values["scaling"]
    if kind is None:
        for k in given:
            ctx.err(f"rope {k} needs a scaling", ctx.span(k),
                    "add scaling: " + " | ".join(ROPE_TYPES[1:]))
        return False if given else None
    params = {"rope_type": kind, **{k: list(v) if isinstance(v, tuple) else v
                                    for k, v in given.items()}}
    problems = _validate(params, dim=dim)
    for key, msg, hint in problems:
        where = "scaling" if key in ("rope_type", "type") else key
        if key not in given and key != "dim":
            where = "scaling"  # a missing option: point at the scaling type
        msg = msg.replace("rope_type '", "scaling '")  # the option's name in attndsl
        ctx.err(f"rope {msg}", ctx.span(where), hint or None)
    if problems:
        return False
    return RopeScaling.from_mapping(params, dim=dim)


def _format(r: Rope) -> tuple[tuple[str, object], ...]:
    items: list[tuple[str, object]] = [("theta", r.theta), ("dim", r.dim),
                                       ("interleaved", r.interleaved)]
    if r.scaling is not None:
        items.append(("scaling", r.scaling.rope_type))
        items += [(k, getattr(r.scaling, k)) for k in _SCALING_KEYS
                  if getattr(r.scaling, k) is not None]
    if r.positions is not None:
        items.append(("positions", r.positions))
    return tuple(items)


def _summary(r: Rope, block) -> str:
    text = f"theta={r.theta:g}, dim={r.dim}{', interleaved' if r.interleaved else ''}"
    if r.scaling is not None:
        s = r.scaling
        text += f", {s.rope_type}" + (f" x{s.factor:g}" if s.factor is not None else "")
        factor = attention_factor(s)
        if factor != 1.0:
            text += f" (cos/sin x{factor:.4g})"
    if r.positions is not None:
        text += f", positions {r.positions}"
    return text


def _ort(r: Rope, block) -> str:
    # the fused kernels take cos/sin caches over positions 0..total-1 (or a past offset):
    # scaled tables (constant or from the run-time length) feed them as they are; position
    # ids have no GroupQueryAttention input
    if r.positions is not None:
        return ("rope positions: explicit position ids (the fused kernels rotate at "
                "past_len + i)")
    return "rotary"


FEATURE = BlockFeature(
    key="rope", node=Rope,
    options=(Option("theta", "float", 10000.0, doc="base of the inverse frequencies"),
             Option("dim", "int", None, minimum=1, doc="features rotated per head (even)"),
             Option("interleaved", "bool", False, doc="rotate pairs (2i, 2i+1), not halves"),
             Option("scaling", "choice", None, choices=ROPE_TYPES[1:],
                    doc="transformers' rope_type (none: plain RoPE)"),
             *SCALING_OPTIONS,
             Option("positions", "name", None,
                    doc="an int [batch, seq] input of position ids (else past_len + i)")),
    doc="rotary position embedding of queries and keys", example="{theta: 10000.0}",
    make=_make,
    format=_format,
    summary=_summary, listed=True,
    reference={"rope": _reference},
    portable={"rope": _portable},
    ort=_ort,
    passes=frozenset({"fold-scale", "fuse-qkv"}),  # a rotation is linear in q
    inputs=lambda r: () if r.positions is None else ((r.positions, "stream"),),
)
