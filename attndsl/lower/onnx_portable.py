"""The portable lowering: IR -> ONNX with standard ops only (default domain, opsets 17..21).

Per block: projections ``x @ W.T + b`` (weights are initializers in PyTorch layout, named as
the weights); split heads to [B, H, S, D]; RoPE; the cache concat; logits as one batched
MatMul (GQA folds the query heads of a group into the rows: [B, G, group*Sq, D], so K/V are
never repeated); score modifiers; the mask (a bool tensor, masked logits -> -inf by Where);
Softmax; the fully-masked-row guard (built from the bool mask, so it works on every runtime);
probabilities @ V; merge heads; output projection.

float16 models keep inputs, weights, projections and outputs in float16 and compute from the
per-head q/k/v to the attention output in float32. Cached keys/values are stored in the model
dtype, and the attention reads the stored values, so a step with a cache computes exactly
what a step without one would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from ..arrays import as_dtype
from ..features.registry import (
    block_rules,
    cache_axis,
    cache_inputs,
    cache_layout,
    cache_outputs,
    cache_shapes,
    replacing,
    rule,
)
from ..ir.nodes import Block, Model
from ..weights import check_weights
from . import block_sparse as bs
from .builder import FLOAT, INT64, ONNX_TYPES, GraphBuilder
from .mask_ops import MaskLowering, lower_scores, row_witnesses, zero_empty_rows
from .plan import Plan, SparseOptions, plan_block
from .positions import Positions
from .targets import PORTABLE, check_opset

PAST_LEN, PRESENT_LEN = "past_len", "present_len"


@dataclass(frozen=True)
class BlockExplanation:
    """Which lowering a block got and why (``attndsl compile --explain``)."""

    block: str
    lowering: str
    reason: str


def lower_portable(model: Model, weights: Mapping[str, np.ndarray],
                   opset: int = 18) -> onnx.ModelProto:
    """The model as an ONNX ModelProto using only standard ops of ``opset``."""
    check_opset(opset, PORTABLE.name)
    return PortableLowering(model, weights, opset).run()


class PortableLowering:
    """The ``portable`` target: every block in standard ONNX ops. Other targets subclass it
    and override ``block`` (``ort_contrib.OrtLowering``); ``lower.lowering`` picks the class
    by target."""

    def __init__(self, model: Model, weights: Mapping[str, np.ndarray], opset: int,
                 sparse: SparseOptions | None = None):
        self.model = model
        self.opset = opset
        self.sparse = sparse or SparseOptions()
        self.g = GraphBuilder(opset)
        self.dtype = ONNX_TYPES[model.dtype]
        self.weights = check_weights(model, dict(weights), "weights")
        self.input_types = {i.name: i.dtype for i in model.inputs}
        self.streams: dict[str, str] = {}
        self.results: dict[str, dict[str, str]] = {}
        self._f32: dict[str, str] = {}
        self._memo: dict[object, object] = {}
        self.cores: dict[str, Block] = {}  # block -> the geometry its attention reads
        self._v_width: dict[str, int] = {}  # block -> value width a ``values`` rule gave
        self._extra: dict[str, dict[str, object]] = {}  # block -> its states' shared extra
        self.explain: list[BlockExplanation] = []

    # ------------------------------------------------------------ model
    def run(self) -> onnx.ModelProto:
        m, g = self.model, self.g
        for i in m.inputs:
            g.add_input(i.name, ONNX_TYPES[i.dtype], [self.onnx_dim(e) for e in i.shape])
            if i.dtype == m.dtype and len(i.shape) == 3:
                self.streams[i.name] = i.name
        for b in m.blocks:
            if b.cache:
                batch = self.onnx_dim(self.model.stream_dims(b.query)[0])
                for name, shape in cache_inputs(b, batch, PAST_LEN).items():
                    # shape (): a static cache's write position
                    g.add_input(name, INT64 if shape == () else self.dtype, list(shape))
        for name, arr in self.weights.items():
            g.add_initializer(name, as_dtype(arr, m.dtype))  # no copy if same dtype
        for b in m.blocks:
            with g.scope(b.name):
                self.block(b)
        self.outputs()
        opset_ids = [helper.make_opsetid("", self.opset)]
        return helper.make_model(
            g.make_graph(m.name), opset_imports=opset_ids, producer_name="attndsl",
            ir_version=helper.find_min_ir_version_for(opset_ids))

    def outputs(self) -> None:
        m, g = self.model, self.g
        for o in m.outputs:
            b = m.block(o.stream)
            batch, seq = (self.onnx_dim(e) for e in self.model.stream_dims(b.name))
            if o.attr == "weights":
                k_len = (b.cache_max_len if b.static_cache else PRESENT_LEN if b.cache
                         else self.onnx_dim(self.model.stream_dims(b.key)[1]))
                probs = self.results[b.name]["weights"]
                if self.dtype != FLOAT:
                    with g.scope(b.name):
                        probs = g.cast(probs, self.dtype)
                g.add_output(o.name, probs, self.dtype, [batch, b.heads, seq, k_len])
            else:
                g.add_output(o.name, self.streams[b.name], self.dtype, [batch, seq, b.out_dim])
        for b in m.blocks:
            if b.cache:
                batch = self.onnx_dim(self.model.stream_dims(b.query)[0])
                for (name, shape), what in zip(cache_outputs(b, batch, PRESENT_LEN).items(),
                                               cache_shapes(b, 0, 0), strict=True):
                    if b.static_cache:  # ``write_cache`` wrote it under the output's name
                        g.expose(name, self.dtype, list(shape))
                    else:  # the join's own output (an Identity would copy the cache)
                        g.add_output_in_place(name, self.results[b.name][what], self.dtype,
                                              list(shape))

    def onnx_dim(self, entry: str | int) -> str | int:
        """A shape entry as ONNX sees it: fixed dims are numbers, dynamic ones dim_params."""
        if isinstance(entry, int):
            return entry
        size = self.model.dim(entry).size
        return entry if size is None else size

    def float32(self, name: str) -> str:
        """A graph input or weight of the model's float type, as float32."""
        if self.dtype == FLOAT:
            return name
        if name not in self._f32:
            self._f32[name] = self.g.cast(name, FLOAT)
        return self._f32[name]

    FLOAT = FLOAT  # the float32 element type, for rules that cannot import onnx

    def memo(self, key: object, build: Callable[[], object]) -> object:
        """``build()``, once per ``key`` for the whole graph (RoPE tables per positions)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def to_float32(self, x: str) -> str:
        return x if self.dtype == FLOAT else self.g.cast(x, FLOAT)

    def to_model_dtype(self, x: str) -> str:
        return x if self.dtype == FLOAT else self.g.cast(x, self.dtype)

    # ------------------------------------------------------------ one block
    def block(self, b: Block) -> None:
        """Lower one block with the strategy the plan picks (``--explain`` reports it)."""
        q, k, v, pos, result = self.prepare(b)
        core = self.cores.get(b.name, b)  # a feature's cache rule may attend in other shapes
        plan = self.plan(core)
        if plan.kind == "dense":
            o, p = self.attend_dense(core, q, k, v, pos)
        else:
            o, p = self.attend_sparse(core, plan, q, k, v, pos), None
        self.explain.append(BlockExplanation(b.name, plan.lowering, plan.reason))
        if block_rules("portable", "attended", b.features):
            st = self.state(b, pos=pos, o=o)
            self.hooks(st, "attended")
            o = st.o
        self.finish(b, o, p, result)

    def state(self, b: Block, **fields) -> BlockLowering:
        """A block state for the features' rules; every state of one block shares ``extra``,
        so a rule can hand a value to a later hook (the output gate: ``project`` to
        ``merged``)."""
        return BlockLowering(self, b, extra=self._extra.setdefault(b.name, {}), **fields)

    def hooks(self, st: BlockLowering, hook: str) -> None:
        """Run the ``portable`` rules of the block's features at ``hook`` (registry order)."""
        for node, r in block_rules("portable", hook, st.block.features):
            r(node, st)

    def softmax(self, b: Block, pos: Positions) -> Callable[[str, str | None], str]:
        """The row softmax of the logits (disallowed cells -inf; ``allowed`` the bool mask,
        None when every cell is allowed): a block feature's ``softmax`` rule, else
        ``Softmax``. The dense and the block-sparse strategies both call it."""
        own = replacing("portable", "softmax", b.features)
        if own is None:
            return lambda s, allowed: self.g.op("Softmax", s, axis=-1)
        node, r = own
        return lambda s, allowed: r(node, self.state(b, pos=pos), s, allowed)

    def plan(self, b: Block) -> Plan:
        """Dense or block-sparse for block ``b`` (``--sparse``, cost model: ``plan.py``)."""
        wants_weights = any(o.stream == b.name and o.attr == "weights" for o in self.model.outputs)
        q_len, k_len = self.model.static_lens(b)
        return plan_block(b, q_len, k_len, wants_weights, self.sparse)

    def attend_sparse(self, b: Block, plan: Plan, q: str, k: str, v: str,
                      pos: Positions) -> str:
        """Block-sparse attention or the chunked dense lowering (``block_sparse.py``): output
        [B, H, Sq, Dv] (float32)."""
        lens = self.model.static_lens(b)
        ctx = bs.Context(self.g, b, self.input_types, lens, self.float32,
                         guard=not row_witnesses(b.mask, self.model.has_diagonal(b)),
                         softmax=self.softmax(b, pos), v_width=self._v_width.get(b.name))
        with self.g.scope(plan.kind):
            if plan.kind == "band":
                return bs.attend_band(ctx, q, k, v, pos, plan.tile, plan.lo, plan.hi,
                                      plan.pieces)
            if plan.kind == "chunks":
                return bs.attend_chunks(ctx, q, k, v, pos, plan.chunks, plan.hi)
            if plan.kind == "dense_chunks":  # every key, queries in chunks
                return bs.attend_chunks(ctx, q, k, v, pos, plan.chunks, None)
            return bs.attend_tiles(ctx, q, k, v, plan.tile, plan.groups, plan.q_len,
                                   plan.k_len)

    def project(self, b: Block) -> tuple[str, str, str]:
        """q [B, Sq, H*D], k [B, Sk, G*D], v [B, Sk, G*Dv] in the model dtype: the three
        projections (one MatMul and a Split when fused), or the core-mode streams."""
        g = self.g
        xq, xk, xv = self.streams[b.query], self.streams[b.key], self.streams[b.value]
        if b.project and b.fused_qkv:  # one MatMul for the three projections of one stream
            sizes = (b.heads * b.head_dim, b.kv_heads * b.head_dim, b.kv_heads * b.v_head_dim)
            qkv = self.linear(xq, f"{b.name}.qkv_proj", b.has_bias("qkv"))
            q, k, v = g.op_multi("Split", qkv, g.i64(*sizes), axis=-1, n_out=3)
            return q, k, v
        if b.project:
            return (self.linear(xq, f"{b.name}.q_proj", b.has_bias("q")),
                    self.linear(xk, f"{b.name}.k_proj", b.has_bias("k")),
                    self.linear(xv, f"{b.name}.v_proj", b.has_bias("v")))
        return xq, xk, xv

    def prepare(self, b: Block) -> tuple[str, str, str, Positions, dict[str, str]]:
        """Projections, heads, RoPE, scale and the cache: q [B, H, Sq, D] (scaled), k
        [B, G, Sk, D] and v [B, G, Sk, Dv] in float32 (past keys first), the block's positions,
        and the present key/value values (``result``) when the block has a cache."""
        g = self.g
        st = self.state(b)
        own = replacing("portable", "project", b.features)
        st.q, st.k, st.v = own[1](own[0], st) if own else self.project(b)
        self.hooks(st, "projected")
        layout = cache_layout(b)  # a feature's own cache (MLA's latent), else per-head K/V
        kv_heads, k_dim, v_dim = layout.kv if layout else (b.kv_heads, b.head_dim, b.v_head_dim)
        q = self.to_float32(self.split_heads(st.q, b.heads, b.head_dim))
        k = self.to_float32(self.split_heads(st.k, kv_heads, k_dim))
        v = self.split_heads(st.v, kv_heads, v_dim)
        st.pos = pos = self.positions(b)
        st.q, st.k, st.v = q, k, v
        for hook in ("heads", "rope", "post_rope"):
            self.hooks(st, hook)
        q, k, v = st.q, st.k, st.v
        if b.scale != 1.0:  # (fold-scale moves the scale into the query projection)
            q = g.mul(q, g.scalar(b.scale, np.float32))
        result: dict[str, str] = {}
        own = replacing("portable", "cache", b.features)
        if own:  # the feature joins its own cache and gives the keys and values attended over
            st.q = q
            result, self.cores[b.name] = own[1](own[0], st)
            q, k, v = st.q, st.k, st.v
        elif b.static_cache:
            result["key"] = self.write_cache(b, "key", self.to_model_dtype(k), pos)
            result["value"] = self.write_cache(b, "value", v, pos)
            k, v = result["key"], result["value"]
        elif b.cache:
            result["key"] = g.concat([f"{b.name}.past_key", self.to_model_dtype(k)], axis=2)
            result["value"] = g.concat([f"{b.name}.past_value", v], axis=2)
            k, v = result["key"], result["value"]
        k, v = self.to_float32(k), self.to_float32(v)
        if block_rules("portable", "values", b.features):  # after the cache: not cached
            st.k, st.v = k, v
            self.hooks(st, "values")
            v = st.v
            if st.v_width:
                self._v_width[b.name] = st.v_width
        return q, k, v, pos, result

    def write_cache(self, b: Block, what: str, new: str, pos: Positions) -> str:
        """A static cache's buffer ``<block>.cache_<what>`` [B, G, max_len, D] with the new rows [B,
        G, S, D] (model dtype) written at slots ``write_pos ..``: ``TensorScatter`` (linear mode) at
        opset 24 (the ``ort`` target keeps such a block on this lowering), ``ScatterElements`` on
        axis 2 before (the same copy of the new rows; both write in place when ONNX Runtime gets the
        output bound to the input's buffer, docs/runtimes.md). The buffer input has no other reader,
        so a runtime that aliases the two never lets a node see a half-written cache."""
        g = self.g
        buffer, out = f"{b.name}.cache_{what}", f"{b.name}.cache_{what}_out"
        with g.scope(f"write_{what}"):  # straight into the graph output: no Identity copy
            if self.opset >= 24:  # write_indices: the one write position for every row
                rows = g.shape(buffer, 0, 1)
                at = g.op("Expand", g.reshape(pos.past, [1]), rows)
                return g.op_to(out, "TensorScatter", buffer, new, at, mode="linear", axis=2)
            slots = g.op("Expand", g.reshape(pos.k_new, [1, 1, -1, 1]), g.shape(new))
            return g.op_to(out, "ScatterElements", buffer, slots, new, axis=2)

    def positions(self, b: Block) -> Positions:
        """The query and key positions of block ``b`` (absolute: past keys first). Lengths
        come from the root input of each stream (``Model.root_stream``), so the blocks of one
        chain build their positions from the same value and ``share-computations`` builds
        them once."""
        past = None
        if b.static_cache:  # the write position; the keys are the buffer's max_len slots
            return Positions(self.g, b.self_attention, f"{b.name}.write_pos",
                             self.streams[self.model.root_stream(b.query)],
                             self.streams[self.model.root_stream(b.key)],
                             same_stream=b.query == b.key, slots=b.cache_max_len)
        if b.cache:  # past length: the time axis of the block's first cached tensor
            first = next(iter(cache_shapes(b, 0, 0)))  # (per-head K/V, or MLA's latent)
            past = self.g.dim(f"{b.name}.past_{first}", cache_axis(b))
        return Positions(self.g, b.self_attention, past,
                         self.streams[self.model.root_stream(b.query)],
                         self.streams[self.model.root_stream(b.key)],
                         same_stream=b.query == b.key)

    def attend_dense(self, b: Block, q: str, k: str, v: str,
                     pos: Positions) -> tuple[str, str]:
        """Dense attention over all (query, key) pairs: output [B, H, Sq, Dv] and the
        probabilities [B, H, Sq, Sk] (float32)."""
        g = self.g
        s = self.per_group(b, q, g.transpose(k, [0, 1, 3, 2]))  # [B, H, Sq, Sk]
        s = lower_scores(g, b, pos, s, self.float32)
        allowed, guard = self.allowed(b, pos)
        mask = None if allowed is True else (
            allowed if isinstance(allowed, str) else g.const([False], bool))
        if mask is not None:
            s = g.where(mask, s, g.scalar(-np.inf, np.float32))
        p = self.softmax(b, pos)(s, mask)
        if mask is not None and guard:  # rows with no allowed key: probabilities 0, not NaN
            p = zero_empty_rows(g, mask, p)
        return self.per_group(b, p, v), p

    def finish(self, b: Block, o: str, p: str | None, result: dict[str, str]) -> None:
        """Merge heads of o [B, H, Sq, Dv], output projection; record the block's results."""
        g = self.g
        o = g.reshape(g.transpose(o, [0, 2, 1, 3]), [0, 0, b.heads * b.v_head_dim])
        o = self.to_model_dtype(o)
        if block_rules("portable", "merged", b.features):
            st = self.state(b, o=o)
            self.hooks(st, "merged")
            o = st.o
        if b.project:
            o = self.linear(o, f"{b.name}.o_proj", b.has_bias("o"))
        self.streams[b.name] = o
        if p is not None:
            result["weights"] = p
        self.results[b.name] = result

    def linear(self, x: str, name: str, bias: bool) -> str:
        """``x @ W.T + b`` with W in PyTorch layout [out, in]."""
        g = self.g
        with g.scope(name.rsplit(".", 1)[-1]):
            y = g.matmul(x, g.transpose(f"{name}.weight", [1, 0]))
            return g.add(y, f"{name}.bias") if bias else y

    def split_heads(self, x: str, n: int, d: int) -> str:
        """[B, S, n*d] -> [B, n, S, d] (feature h*d + j is feature j of head h)."""
        return self.g.transpose(self.g.reshape(x, [0, 0, n, d]), [0, 2, 1, 3])

    def per_group(self, b: Block, a: str, kv: str) -> str:
        """``a`` [B, H, Sq, X] @ ``kv`` [B, G, X, Y], query head h reading kv head
        h // group (one batched MatMul; K/V are never repeated: the heads of a group are
        folded into the rows, ``GraphBuilder.grouped_matmul``)."""
        return self.g.grouped_matmul(a, kv, b.heads, b.kv_heads, fold_rows=True)

    def allowed(self, b: Block, pos: Positions) -> tuple[str | bool, bool]:
        """The block's bool mask with bias(t) -inf cells removed, and whether some query row
        may end up with no key (then the guard zeroes it)."""
        g = self.g
        lens = self.model.static_lens(b)
        mask = b.mask
        allowed = MaskLowering(g, b, pos, self.input_types, lens).lower(mask)
        guard = not row_witnesses(mask, self.model.has_diagonal(b))
        if b.static_cache and allowed is not False:  # slots not written yet hold no keys
            # (a row's witness key, key 0 or its own, is a written slot: no new guard)
            written = g.less(pos.k, pos.k_total)
            allowed = written if allowed is True else g.and_(allowed, written)
        # scores that add an input over the cells (bias(t)): its -inf cells are masked out
        added = [name for mod in b.score for name, role in rule("inputs", mod)(mod)
                 if role == "cells"]
        for name in added:
            guard = True
            finite = g.not_(g.op("IsInf", self.float32(name), detect_positive=0))
            if allowed is False:
                break
            allowed = finite if allowed is True else g.and_(allowed, finite)
        return allowed, guard and allowed is not True


@dataclass
class BlockLowering:
    """The state of one block in the portable lowering, handed to the block features'
    ``portable`` rules (docs/architecture.md, "Block features"). ``q``, ``k``, ``v``: at
    ``project`` / ``projected`` the projected streams [B, S, H*D], [B, S, G*D], [B, S, G*Dv]
    in the model dtype; from ``heads`` to ``post_rope`` per head in float32, [B, H, Sq, D],
    [B, G, Sk, D] (new keys) and [B, G, Sk, Dv] (model dtype); at ``values`` k and v hold
    every key (past ones first) in float32, and a rule that changes the values' width sets
    ``v_width`` to it (the block-sparse strategies need it as a number). ``pos`` the block's
    positions (``pos.q``, ``pos.k_new``, ``pos.q_col``...); ``o`` the attention output [B, H,
    Sq, Dv] float32 at ``attended``, [B, Sq, H*Dv] in the model dtype at ``merged``. A
    ``cache`` rule (a feature with its own cache layout) reads ``q`` (scaled), ``k``, ``v``
    (the new ones) and the graph inputs ``<block>.past_<entry>``, sets ``q``, ``k``, ``v`` to
    what the attention reads and returns (present entries by name, the block geometry the
    attention runs with: ``heads``, ``kv_heads``, ``head_dim``, ``v_head_dim``).

    ``g`` is the graph builder; ``float32(name)`` reads a weight or input as float32,
    ``to_float32`` / ``to_model_dtype`` cast values, ``linear(x, name, bias)`` applies a
    Linear weight, ``memo(key, build)`` builds a value once per graph, ``FLOAT`` is the
    float32 element type and ``float16`` whether the model is float16. ``extra`` is one dict
    per block, shared by all its states (a value one hook leaves for a later one)."""

    low: PortableLowering
    block: Block
    q: str = ""
    k: str = ""
    v: str = ""
    pos: Positions | None = None
    o: str = ""
    v_width: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    FLOAT = FLOAT

    @property
    def g(self) -> GraphBuilder:
        return self.low.g

    @property
    def float16(self) -> bool:
        return self.low.dtype != FLOAT

    def memo(self, key: object, build: Callable[[], object]) -> object:
        return self.low.memo(key, build)

    def float32(self, name: str) -> str:
        return self.low.float32(name)

    def to_float32(self, x: str) -> str:
        return self.low.to_float32(x)

    def to_model_dtype(self, x: str) -> str:
        return self.low.to_model_dtype(x)

    def linear(self, x: str, name: str, bias: bool) -> str:
        return self.low.linear(x, name, bias)
