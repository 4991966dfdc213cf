"""The IR: frozen dataclasses with every default resolved and every name checked.

The IR knows nothing of ONNX. ``Model`` is what passes rewrite, the printer prints, the
reference interpreter evaluates and the lowerings translate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features.base import Mask, Score
from ..features.block_base import BlockNode
from ..features.blocks.rope import Rope
from ..features.masks.all import All
from ..features.registry import block_feature_of, replacing, rule
from ..source import Span

FLOAT_DTYPES = ("float32", "float16")
# KV cache layouts: ``growing`` (``cache: true``: past_key/past_value in, present_* = past and
# the new rows out) and ``static`` (preallocated buffers of ``max_len`` slots written in place)
CACHE_LAYOUTS = ("growing", "static")
INPUT_DTYPES = ("float32", "float16", "int64", "int32", "bool")


@dataclass(frozen=True, slots=True)
class Dim:
    """A named size: ``size`` is an int, or None for a ``dynamic`` (symbolic) dim."""

    name: str
    size: int | None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Input:
    """A graph input. Shape entries are dim names or ints; dtype is resolved."""

    name: str
    shape: tuple[str | int, ...]
    dtype: str
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Block:
    """One attention block. ``project=False`` is core mode: ``query``/``key``/``value`` are
    already per-head-packed streams and no weights exist. ``features`` holds the block
    features (``rope``, ``qk_norm``, ...: ``features/blocks/``), at most one per key, in the
    registry's order; ``mask`` is always an expression (``all`` when the spec has none).
    ``cache_layout`` is ``growing`` or, with ``cache_max_len`` slots, ``static``
    (docs/language.md, "KV cache")."""

    name: str
    query: str
    key: str  # projected mode: the key_value stream
    value: str  # projected mode: the key_value stream
    heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    width_q: int
    width_kv: int  # projected mode: key_value width; core mode: key width (G*D)
    out_dim: int  # width of the block's output stream
    project: bool = True
    bias: bool = False
    scale: float = 1.0
    mask: Mask = All()
    score: tuple[Score, ...] = ()
    features: tuple[BlockNode, ...] = ()
    cache: bool = False
    self_attention: bool = True  # query positions are past_len + i (else i)
    fused_qkv: bool = False  # one weight <block>.qkv_proj.{weight,bias} = [q; k; v] rows
    cache_layout: str = "growing"  # with cache: "growing" or "static" (CACHE_LAYOUTS)
    cache_max_len: int | None = None  # a static cache's slots per sequence
    span: Span | None = field(default=None, compare=False, repr=False)

    @property
    def static_cache(self) -> bool:
        """Whether the block keeps a static cache: preallocated ``[batch, kv_heads, max_len,
        D]`` buffers plus a write position, updated in place (TensorScatter)."""
        return self.cache and self.cache_layout == "static"

    @property
    def group(self) -> int:
        """Query heads per kv head."""
        return self.heads // self.kv_heads

    def feature(self, key: str) -> BlockNode | None:
        """The block's feature node for setting ``key`` (``"rope"``), or None."""
        return next((f for f in self.features if block_feature_of(f).key == key), None)

    def has_bias(self, proj: str) -> bool:
        """Whether projection ``proj`` (``q``, ``k``, ``v``, ``o``; ``qkv``: the fused one,
        any of q, k, v) adds a bias: ``bias: true`` gives all four, the ``bias`` feature
        (``features/blocks/bias.py``) the ones it lists."""
        if self.bias:
            return True
        node = self.feature("bias")
        if node is None:
            return False
        return any(getattr(node, p) for p in "qkv") if proj == "qkv" else getattr(node, proj)

    @property
    def rope(self) -> Rope | None:
        """The RoPE feature, or None (read-only convenience over ``features``)."""
        return self.feature("rope")


@dataclass(frozen=True, slots=True)
class Output:
    """A graph output: a block's output stream, or its probabilities (``attr='weights'``)."""

    name: str
    stream: str
    attr: str | None = None
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    dtype: str
    seed: int
    dims: tuple[Dim, ...]
    inputs: tuple[Input, ...]
    blocks: tuple[Block, ...]
    outputs: tuple[Output, ...]
    weights_file: str | None = None  # resolved path, or None for seeded weights
    version: int = 1
    spec_text: str = field(default="", compare=False, repr=False)
    spec_path: str = field(default="", compare=False, repr=False)

    def dim(self, name: str) -> Dim:
        return next(d for d in self.dims if d.name == name)

    def input(self, name: str) -> Input:
        return next(i for i in self.inputs if i.name == name)

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)

    def has_input(self, name: str) -> bool:
        return any(i.name == name for i in self.inputs)

    def root_stream(self, stream: str) -> str:
        """The graph input a stream's batch and length come from: a block's output stream is
        as long as its query stream, so every chain of blocks ends at one input."""
        while not self.has_input(stream):
            stream = self.block(stream).query
        return stream

    def stream_dims(self, stream: str) -> tuple[str | int, str | int]:
        """The (batch, seq) shape entries of a stream: dim names or ints."""
        shape = self.input(self.root_stream(stream)).shape
        return shape[0], shape[1]

    def static_size(self, entry: str | int) -> int | None:
        """A shape entry's size when it is fixed, else None."""
        return entry if isinstance(entry, int) else self.dim(entry).size

    def static_lens(self, block: Block) -> tuple[int | None, int | None]:
        """The fixed lengths of a block's query and (new) key streams, None where dynamic."""
        return (self.static_size(self.stream_dims(block.query)[1]),
                self.static_size(self.stream_dims(block.key)[1]))

    def has_diagonal(self, block: Block) -> bool:
        """Every query row has its own position among the new keys (k = q exists):
        self-attention whose query and key streams are one stream, or have the same length
        dim, or the same fixed length. The one rule the lowerings use for the fully-masked-row
        guard and for mapping causal masks onto fused kernels."""
        if not block.self_attention:
            return False
        if block.query == block.key:
            return True
        sq, sk = self.stream_dims(block.query)[1], self.stream_dims(block.key)[1]
        size = self.static_size(sq)
        return sq == sk or size is not None and size == self.static_size(sk)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter the model needs, name -> shape (PyTorch Linear layout)."""
        out: dict[str, tuple[int, ...]] = {}
        for b in self.blocks:
            if b.project:
                h, g, d, dv = b.heads, b.kv_heads, b.head_dim, b.v_head_dim
                shapes = {"q": (h * d, b.width_q), "k": (g * d, b.width_kv),
                          "v": (g * dv, b.width_kv)}
                if replacing("reference", "project", b.features):
                    shapes = {}  # the feature that replaces the projections lists its weights
                elif b.fused_qkv:  # one stream: the q, k, v rows stacked in one Linear
                    shapes = {"qkv": (h * d + g * d + g * dv, b.width_q)}
                shapes["o"] = (b.out_dim, h * dv)
                for proj, shape in shapes.items():
                    out[f"{b.name}.{proj}_proj.weight"] = shape
                for proj, shape in shapes.items():
                    if b.has_bias(proj):
                        out[f"{b.name}.{proj}_proj.bias"] = shape[:1]
            for s in b.score:
                out.update(rule("weights", s)(s, b))
            for f in b.features:
                out.update(block_feature_of(f).weights(f, b))
        return out
