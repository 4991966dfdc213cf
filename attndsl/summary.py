"""What ``attndsl check`` reports: streams, parameters, and per block the mask density, tile
counts and FLOPs at concrete sizes.

FLOPs count a multiply-add as 2 and cover the matrix products only (softmax, RoPE, score
modifiers and masking are not counted; a block feature adds the products it needs, its
``flops`` rule, to the projections):

- projections: ``2·B·(Sq·Wq·H·D + Sk·Wkv·G·(D + Dv) + Sq·H·Dv·out_dim)`` (none in core mode;
  Sk counts the new keys only, not the cached ones);
- attention: ``2·(D + Dv)·A`` where A is the number of attended (batch, head, query, key)
  cells — only keys the mask allows are counted, as a sparse kernel would compute them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import AttnDSLError, did_you_mean
from .features import nodes as mn
from .features.registry import BLOCK_FEATURES, block_feature_of, cache_inputs, replacing
from .features.text import format_leaf, format_mask
from .inputs import random_inputs
from .ir.nodes import Block, Model
from .limits import check_cells, check_model, check_run, input_shapes
from .masks.analysis import density, tile_counts

DEFAULT_LEN = 128
DEFAULT_TILE = 64


@dataclass(frozen=True)
class StreamInfo:
    name: str
    kind: str  # "input" or "block"
    shape: tuple[str | int, ...]  # symbolic
    size: tuple[int, ...]  # at the checked sizes


@dataclass(frozen=True)
class BlockInfo:
    block: Block
    q_len: int
    k_len: int
    attended: int  # allowed (batch, head, query, key) cells
    cells: int  # batch * heads * q_len * k_len
    tiles: tuple[int, int, int]  # full, partial, empty (head, tile) pairs at compile time
    proj_flops: int
    attn_flops: int
    inputs_used: tuple[str, ...]  # graph inputs the mask reads (random example values)

    @property
    def density(self) -> float:
        return self.attended / self.cells if self.cells else 0.0


@dataclass(frozen=True)
class Summary:
    model: Model
    sizes: dict[str, int]
    past_len: int
    params: int
    streams: tuple[StreamInfo, ...]
    blocks: tuple[BlockInfo, ...]
    tile: int
    seed: int


def check_sizes(model: Model, sizes: Mapping[str, int], default_len: int = DEFAULT_LEN,
                default_batch: int = 1) -> dict[str, int]:
    """A size for every dim: fixed dims keep theirs; dynamic ones come from ``sizes``, else
    ``default_batch`` for a dim named batch and ``default_len`` otherwise."""
    names = [d.name for d in model.dims]
    for name, value in sizes.items():
        if name not in names:
            raise AttnDSLError(f"unknown dim '{name}' in --sizes",
                               hint=did_you_mean(name, names) or f"dims: {', '.join(names)}")
        fixed = model.dim(name).size
        if fixed is not None and fixed != value:
            raise AttnDSLError(f"dim '{name}' is fixed at {fixed}, --sizes gives {value}")
        if value <= 0:
            raise AttnDSLError(f"dim '{name}' must be positive in --sizes, got {value}")
    return {d.name: d.size if d.size is not None
            else int(sizes.get(d.name, default_batch if d.name == "batch" else default_len))
            for d in model.dims}


def stream_shapes(model: Model, sizes: Mapping[str, int]) -> tuple[StreamInfo, ...]:
    """Every stream (float [batch, seq, width] inputs, then block outputs)."""
    out: dict[str, StreamInfo] = {}

    def conc(shape):
        return tuple(sizes[s] if isinstance(s, str) else s for s in shape)

    for i in model.inputs:
        if i.dtype.startswith("float") and len(i.shape) == 3:
            out[i.name] = StreamInfo(i.name, "input", i.shape, conc(i.shape))
    for b in model.blocks:
        q = out[b.query]
        shape = (*q.shape[:2], b.out_dim)
        out[b.name] = StreamInfo(b.name, "block", shape, conc(shape))
    return tuple(out.values())


def graph_input_names(model: Model) -> list[str]:
    """The ONNX graph inputs: the spec's inputs, then each cached block's past key / value."""
    names = [i.name for i in model.inputs]
    for b in model.blocks:
        if b.cache:
            names += list(cache_inputs(b, 0, 0))
    return names


def _block_info(b: Block, streams: Mapping[str, StreamInfo], past_len: int,
                inputs: Mapping[str, np.ndarray], tile: int) -> BlockInfo:
    batch, q_len = streams[b.query].size[:2]
    new_k = streams[b.key].size[1]
    past = past_len if b.cache else 0
    k_len = new_k + past
    mask = b.mask
    used = mn.input_names(mask)
    cells = batch * b.heads * q_len * k_len
    frac = density(mask, b.heads, q_len, k_len, past, b.self_attention,
                   {name: inputs[name] for name in used})
    attended = round(frac * cells)
    counts = tile_counts(mask, b.heads, q_len, k_len, tile, past, b.self_attention)
    h, g, d, dv = b.heads, b.kv_heads, b.head_dim, b.v_head_dim
    proj = 0
    if b.project:
        proj = 2 * batch * q_len * h * dv * b.out_dim
        if not replacing("reference", "project", b.features):  # else the feature counts them
            proj += 2 * batch * (q_len * b.width_q * h * d + new_k * b.width_kv * g * (d + dv))
    proj += sum(block_feature_of(f).flops(f, b, batch, q_len, new_k) for f in b.features)
    return BlockInfo(b, q_len, k_len, attended, cells,
                     (counts["full"], counts["partial"], counts["empty"]), proj,
                     2 * (d + dv) * attended, used)


def summarize(model: Model, sizes: Mapping[str, int] | None = None, past_len: int = 0,
              seed: int = 0, tile: int = DEFAULT_TILE) -> Summary:
    """The check report at concrete sizes; masks that read inputs use random example inputs
    (``attndsl.inputs.random_inputs`` with ``seed``)."""
    full = check_sizes(model, sizes or {})
    check_model(model)
    streams = stream_shapes(model, full)
    by_name = {s.name: s for s in streams}
    for b in model.blocks:  # the density and tile counts analyse every cell
        check_cells(model, b, by_name[b.query].size[1],
                    by_name[b.key].size[1] + (past_len if b.cache else 0),
                    "the mask density and tile counts")
    check_run(model, input_shapes(model, full, past_len), past_len)  # the example inputs
    inputs = random_inputs(model, full, seed=seed, past_len=past_len)
    blocks = tuple(_block_info(b, by_name, past_len, inputs, tile) for b in model.blocks)
    params = sum(int(np.prod(s)) for s in model.weight_shapes().values())
    return Summary(model, full, past_len, params, streams, blocks, tile, seed)


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def format_summary(s: Summary) -> str:
    m = s.model
    sizes = ", ".join(f"{k}={v}" for k, v in s.sizes.items())
    weights = m.weights_file or f"seeded, seed {m.seed}"
    lines = [f"model {m.name}: {m.dtype}, {len(m.blocks)} block(s), {s.params:,} parameters "
             f"({weights})",
             f"sizes: {sizes}" + (f", past_len={s.past_len}" if s.past_len else ""),
             "streams:"]
    for st in s.streams:
        lines.append(f"  {st.name:<12} {st.kind:<5} {_shape(st.shape)} = {_shape(st.size)}")
    lines.append("blocks:")
    total_p = total_a = 0
    for info in s.blocks:
        b = info.block
        kv = b.key if b.key == b.value else f"key {b.key}, value {b.value}"
        kind = "self" if b.self_attention else "cross"
        lines.append(f"  {b.name}: query {b.query}, key/value {kv} ({kind}-attention"
                     f"{', no projections' if not b.project else ''})")
        lines.append(f"    heads {b.heads}, kv_heads {b.kv_heads}, head_dim {b.head_dim}"
                     + (f", v_head_dim {b.v_head_dim}" if b.v_head_dim != b.head_dim else ""))
        lines.append(f"    mask   {format_mask(b.mask)}")
        lines.append(f"    score  {', '.join(format_leaf(x) for x in b.score) or '-'}")
        for feature in BLOCK_FEATURES:  # each feature's line, in the registry's order
            node = b.feature(feature.key)
            if node is not None or feature.listed:
                text = feature.summary(node, b) if node is not None else "-"
                lines.append(f"    {feature.key:<6} {text}")
        cache = (f"static, {b.cache_max_len} slots" if b.static_cache
                 else "yes" if b.cache else "no")
        lines.append(f"    cache  {cache}")
        note = ""
        if info.inputs_used:
            note = (f" (depends on inputs {', '.join(info.inputs_used)}: random example "
                    f"values, seed {s.seed})")
        lines.append(f"    density {100 * info.density:.2f}% ({info.attended:,} of "
                     f"{info.cells:,} cells, q_len {info.q_len}, k_len {info.k_len}){note}")
        full, partial, empty = info.tiles
        lines.append(f"    tiles {s.tile}x{s.tile}: {full:,} full, {partial:,} partial, "
                     f"{empty:,} empty ((head, tile) pairs"
                     f"{'; tiles the inputs decide count as partial' if info.inputs_used else ''})")
        lines.append(f"    FLOPs  {_si(info.proj_flops)} projections + "
                     f"{_si(info.attn_flops)} attention")
        total_p += info.proj_flops
        total_a += info.attn_flops
    lines.append(f"total FLOPs: {_si(total_p + total_a)} ({_si(total_p)} projections + "
                 f"{_si(total_a)} attention)")
    return "\n".join(lines) + "\n"
