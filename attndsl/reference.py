"""The numpy reference interpreter: evaluates the IR in float64, straight from the language
definition (docs/language.md).

It shares nothing with the lowerings except the constant tables of the features (ALiBi
slopes, T5 buckets, BigBird blocks, RoPE frequencies), so it is the project's own oracle for
every emitted graph. Masks evaluate by their features' ``eval`` rules (``masks.eval``), score
modifiers by theirs, in float64.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from .arrays import realize
from .errors import InputError
from .features.blocks.rope import apply_rope as rope
from .features.registry import (
    block_rules,
    cache_axis,
    cache_layout,
    cache_outputs,
    cache_shapes,
    replacing,
    rule,
)
from .ir.nodes import Block, Model
from .masks.eval import eval_mask

__all__ = ["BlockState", "ScoreEvaluation", "rope", "run_block", "run_reference"]


def _linear(x: np.ndarray, w: Mapping[str, np.ndarray], name: str, bias: bool) -> np.ndarray:
    y = x @ realize(w[f"{name}.weight"]).T
    return y + realize(w[f"{name}.bias"]) if bias else y


def _heads(x: np.ndarray, n: int) -> np.ndarray:
    """[B, S, n*D] -> [B, n, S, D]."""
    b, s, f = x.shape
    return x.reshape(b, s, n, f // n).transpose(0, 2, 1, 3)


@dataclass(frozen=True)
class ScoreEvaluation:
    """What a score feature's ``eval`` rule receives: the block, its head count, the relative
    positions ``rel`` = k - q [Sq, Sk], the inputs and the weights (``weight(name)``)."""

    block: Block
    rel: np.ndarray
    inputs: Mapping[str, np.ndarray]
    weights: Mapping[str, np.ndarray]

    @property
    def heads(self) -> int:
        return self.block.heads

    def weight(self, name: str) -> np.ndarray:
        return realize(self.weights[name])


@dataclass
class BlockState:
    """The state of one block in the reference, handed to the block features' ``reference``
    rules (docs/architecture.md, "Block features"). Float64 throughout.

    ``q``, ``k``, ``v``: at ``project`` / ``projected`` the projected streams [B, S, H*D],
    [B, S, G*D], [B, S, G*Dv]; from ``heads`` on per head, [B, H, Sq, D], [B, G, Sk, D],
    [B, G, Sk, Dv] (new keys only until the cache is joined after ``post_rope``; at
    ``values`` every key, past ones first, and a rule may change the values' width).
    ``q_pos`` [Sq] and ``k_pos_new`` [Sk] are the absolute positions of the queries and the
    new keys; ``o`` is the attention output [B, H, Sq, Dv] at ``attended`` and [B, Sq,
    H*Dv] at ``merged``. ``weight(name)`` reads a parameter, ``inputs`` the graph inputs;
    ``past`` the past cache entries by name (``{}`` without a cache) for a ``cache`` rule,
    ``past_len`` the cached positions before the new tokens (a static cache's write
    position)."""

    block: Block
    weights: Mapping[str, np.ndarray]
    inputs: Mapping[str, np.ndarray]
    xq: np.ndarray
    xk: np.ndarray
    xv: np.ndarray
    q: np.ndarray | None = None
    k: np.ndarray | None = None
    v: np.ndarray | None = None
    q_pos: np.ndarray | None = None
    k_pos_new: np.ndarray | None = None
    o: np.ndarray | None = None
    past: dict[str, np.ndarray] = field(default_factory=dict)
    past_len: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def weight(self, name: str) -> np.ndarray:
        return realize(self.weights[name])


def _hooks(st: BlockState, hook: str) -> None:
    for node, r in block_rules("reference", hook, st.block.features):
        r(node, st)


def _project(st: BlockState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, w = st.block, st.weights
    xq, xk, xv = st.xq, st.xk, st.xv
    if b.project and b.fused_qkv:  # one stream, one weight: the q, k, v rows stacked
        hd, gd = b.heads * b.head_dim, b.kv_heads * b.head_dim
        qkv = _linear(xq, w, f"{b.name}.qkv_proj", b.has_bias("qkv"))
        q, k, v = np.split(qkv, [hd, hd + gd], axis=-1)
        return q, k, v
    if b.project:
        return (_linear(xq, w, f"{b.name}.q_proj", b.has_bias("q")),
                _linear(xk, w, f"{b.name}.k_proj", b.has_bias("k")),
                _linear(xv, w, f"{b.name}.v_proj", b.has_bias("v")))
    return xq, xk, xv


def _softmax(s: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Row softmax over the allowed cells; a row with no allowed key gives zeros."""
    s = np.where(allowed, s, -np.inf)
    row_ok = allowed.any(axis=-1, keepdims=True)
    m = np.where(row_ok, s.max(axis=-1, keepdims=True, initial=-np.inf), 0.0)  # no keys: ok
    e = np.where(allowed, np.exp(s - m), 0.0)
    return e / np.where(row_ok, e.sum(axis=-1, keepdims=True), 1.0)


def run_block(block: Block, w: Mapping[str, np.ndarray], streams: Mapping[str, np.ndarray],
              inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One block: returns {'out', 'weights', and with a cache 'present_<entry>' for each cache
    entry ('present_key' / 'present_value', or a feature's layout)}.

    The block features run at the hook points of the pipeline (``_hooks``), in the
    registry's order."""
    b = block
    st = BlockState(b, w, inputs, streams[b.query], streams[b.key], streams[b.value])
    own = replacing("reference", "project", b.features)
    st.q, st.k, st.v = own[1](own[0], st) if own else _project(st)
    _hooks(st, "projected")
    layout = cache_layout(b)  # a feature's own cache (MLA's latent), else per-head K/V
    kv_heads = layout.kv[0] if layout is not None else b.kv_heads
    st.q, st.k, st.v = _heads(st.q, b.heads), _heads(st.k, kv_heads), _heads(st.v, kv_heads)
    past = 0
    sq, sk = st.q.shape[2], st.k.shape[2]
    buffers: dict[str, np.ndarray] = {}
    if b.static_cache:  # the same step as a growing cache over the slots before write_pos
        buffers = {w: np.asarray(inputs[f"{b.name}.cache_{w}"], np.float64)
                   for w in ("key", "value")}
        past = int(inputs[f"{b.name}.write_pos"])
        if not 0 <= past <= b.cache_max_len - sk:
            raise InputError(f"block '{b.name}': write position {past} with {sk} new tokens "
                             f"does not fit the static cache's {b.cache_max_len} slots",
                             hint="the write position is in 0..max_len - new tokens")
        st.past = {w: x[:, :, :past] for w, x in buffers.items()}
    elif b.cache:
        st.past = {name: np.asarray(inputs[f"{b.name}.past_{name}"], np.float64)
                   for name in cache_shapes(b, 0, 0)}
        past = next(iter(st.past.values())).shape[cache_axis(b)]
    st.past_len = past
    st.q_pos = q_pos = (past if b.self_attention else 0) + np.arange(sq)
    st.k_pos_new = past + np.arange(sk)
    for hook in ("heads", "rope", "post_rope"):
        _hooks(st, hook)
    out: dict[str, np.ndarray] = {}
    own = replacing("reference", "cache", b.features)
    if own:  # the feature joins its own cache and gives the keys and values attended over
        present, _ = own[1](own[0], st)
        out.update({f"present_{name}": x for name, x in present.items()})
    elif b.cache:
        st.k = np.concatenate([st.past["key"], st.k], axis=2)
        st.v = np.concatenate([st.past["value"], st.v], axis=2)
        out["present_key"], out["present_value"] = st.k, st.v
        if buffers:  # the written buffers: the slots after the new tokens as they were
            out["present_key"], out["present_value"] = (
                np.concatenate([x, buffers[w][:, :, past + sk:]], axis=2)
                for w, x in (("key", st.k), ("value", st.v)))
    _hooks(st, "values")  # after the cache: what a feature does to the values is not cached
    q, k, v = st.q, st.k, st.v
    k_pos = np.arange(k.shape[2])
    group = b.heads // k.shape[1]  # query head h reads kv head h // group
    kh, vh = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    s = b.scale * (q @ kh.transpose(0, 1, 3, 2))  # [B, H, Sq, Sk]
    allowed = np.broadcast_to(
        eval_mask(b.mask, b.heads, q_pos, k_pos, q.shape[0], inputs), s.shape).copy()
    rel = k_pos[None, :] - q_pos[:, None]
    ev = ScoreEvaluation(b, rel, inputs, w)
    for mod in b.score:
        s, allowed = rule("eval", mod)(mod, ev, s, allowed)
    own = replacing("reference", "softmax", b.features)
    p = own[1](own[0], st, s, allowed) if own else _softmax(s, allowed)
    st.o = p @ vh  # [B, H, Sq, Dv]
    _hooks(st, "attended")
    o = st.o
    st.o = o.transpose(0, 2, 1, 3).reshape(o.shape[0], sq, b.heads * b.v_head_dim)
    _hooks(st, "merged")
    o = st.o
    if b.project:
        o = _linear(o, w, f"{b.name}.o_proj", b.has_bias("o"))
    if buffers:  # probabilities over every slot of the buffer (0 past the new tokens)
        p = np.pad(p, [(0, 0)] * 3 + [(0, b.cache_max_len - p.shape[-1])])
    out["out"], out["weights"] = o, p
    return out


class _BlockWeights(Mapping[str, np.ndarray]):
    """``weights`` as the model holds them (rounded to its dtype) in float64, each converted
    when the block first reads it and kept for that block only."""

    def __init__(self, weights: Mapping[str, np.ndarray], dtype: str):
        self._source = weights
        self._dtype = dtype
        self._done: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._done:
            self._done[name] = np.asarray(self._source[name]).astype(self._dtype).astype(
                np.float64)
        return self._done[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


def run_reference(model: Model, weights: Mapping[str, np.ndarray],
                  inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All graph outputs (spec outputs, then present caches) in float64, keyed by ONNX name.

    Weights are rounded to the model dtype first, so a float16 model is compared with the
    parameters it really holds. They are read block by block (``_BlockWeights``): ``weights``
    may be a lazy mapping (``attndsl run --verify`` reads each initializer when a block asks
    for it), and only one block's float64 copies are alive at a time."""
    streams: dict[str, np.ndarray] = {
        i.name: np.asarray(inputs[i.name], np.float64)
        for i in model.inputs if i.dtype.startswith("float") and i.name in inputs}
    results: dict[str, dict[str, np.ndarray]] = {}
    for b in model.blocks:
        results[b.name] = run_block(b, _BlockWeights(weights, model.dtype), streams, inputs)
        streams[b.name] = results[b.name]["out"]
    out: dict[str, np.ndarray] = {}
    for o in model.outputs:
        out[o.name] = results[o.stream]["weights" if o.attr == "weights" else "out"]
    for b in model.blocks:
        if b.cache:
            for onnx_name, name in zip(cache_outputs(b, 0, 0), cache_shapes(b, 0, 0),
                                       strict=True):
                out[onnx_name] = results[b.name][f"present_{name}"]
    return out
