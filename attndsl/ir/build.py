"""AST -> IR: name resolution, defaults, and every semantic check (errors collected)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ErrorCollector, did_you_mean, suggest
from ..features import nodes as mn
from ..features.block_base import REPLACING_HOOKS, BlockFeature, BlockNode, Option
from ..features.registry import BLOCKS, SCORES, block_order, block_rules, feature_of, rule
from ..frontend import ast
from ..frontend.ast import TOP_KEYS
from ..source import Span
from .calls import build_call, build_mask
from .nodes import CACHE_LAYOUTS, FLOAT_DTYPES, INPUT_DTYPES, Block, Dim, Input, Model, Output

# the block settings: the core ones, then one per block feature (``features/blocks/``)
CORE_KEYS = ("query", "key_value", "key", "value", "heads", "kv_heads", "head_dim",
             "v_head_dim", "project", "bias", "out_dim", "scale", "score", "mask", "cache")
# a key both core and a feature (``bias``): the core setting takes a scalar (``bias: true``),
# the feature a mapping (``bias: {q: true, v: true}``)
# the options of a ``cache`` mapping (``cache: {layout: static, max_len: 4096}``)
CACHE_OPTIONS = (
    Option("layout", "choice", "growing", choices=CACHE_LAYOUTS,
           doc="growing: past_key/past_value in, present_* out; static: preallocated buffers"),
    Option("max_len", "int", None, minimum=1, doc="a static cache's slots per sequence"),
)
BLOCK_KEYS = CORE_KEYS[:-1] + tuple(k for k in BLOCKS if k not in CORE_KEYS) + CORE_KEYS[-1:]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Stream:
    """What a block reads: shape entries [batch, seq, width] and where it came from."""

    name: str
    batch: str | int
    seq: str | int
    width: int | None
    is_block: bool


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _mapping(st: ast.Setting | None) -> bool:
    """Whether a setting's value is a mapping (a tuple of settings)."""
    return st is not None and isinstance(st.value, tuple)


def _is_number(v: object) -> bool:
    """An int or a finite float (not a bool)."""
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


class Builder:
    def __init__(self, spec: ast.SpecAST):
        self.spec = spec
        self.errors = ErrorCollector()
        self.errors.errors.extend(spec.errors)
        self.dims: dict[str, Dim] = {}
        self.inputs: dict[str, Input] = {}
        self.streams: dict[str, Stream] = {}
        self.bad_dims: set[str] = set()  # reported once, not again where they are used
        self.bad_streams: set[str] = set()  # inputs with a reported error in their shape

    def err(self, msg: str, span: Span | None,
            hint: str | Callable[[], str | None] | None = None) -> None:
        self.errors.error(msg, span, hint)

    # ------------------------------------------------------------ top level
    def build(self) -> Model:
        spec = self.spec
        v = spec.version
        if v.value is None:
            self.err("missing 'attndsl: 1' (the format version)", v.span,
                     "start the spec with 'attndsl: 1'")
        elif v.value != 1 or isinstance(v.value, bool):
            self.err(f"unsupported format version {v.value!r}", v.value_span or v.span,
                     "this compiler reads version 1")
        for extra in spec.extra:
            self.err(f"unknown top-level key '{extra.key}'", extra.span,
                     suggest(extra.key, TOP_KEYS, f"valid keys: {', '.join(TOP_KEYS)}"))
        top: dict[str, ast.Setting] = {}
        for s in spec.top:
            if s.key in top:
                first = top[s.key].span
                self.err(f"duplicate '{s.key}'", s.span,
                         f"first given at line {first.line}" if first else None)
            else:
                top[s.key] = s
        src = spec.source
        path = getattr(src, "path", "<string>")
        name = self.top_str(top.get("name"), Path(path).stem if path != "<string>" else "model")
        dtype = self.top_str(top.get("dtype"), "float32")
        if dtype not in FLOAT_DTYPES:
            s = top["dtype"]
            self.err(f"unsupported dtype '{dtype}'", s.value_span or s.span,
                     did_you_mean(dtype, FLOAT_DTYPES) or "use float32 or float16")
            dtype = "float32"
        seed = 0
        if "seed" in top:
            s = top["seed"]
            if _is_int(s.value) and s.value >= 0:
                seed = s.value
            else:
                self.err("seed must be a non-negative integer", s.value_span or s.span)
        weights = None
        if "weights" in top:
            wname = self.top_str(top["weights"], "")
            base = Path(path).parent if path != "<string>" else Path(".")
            weights = str(base / wname)
        self.dtype = dtype
        for d in spec.dims:
            self.add_dim(d)
        for i in spec.inputs:
            self.add_input(i)
        blocks = self.build_blocks()
        outputs = self.build_outputs({b.name: b for b in blocks})
        self.errors.raise_if_any()
        return Model(name=name, dtype=dtype, seed=seed, dims=tuple(self.dims.values()),
                     inputs=tuple(self.inputs.values()), blocks=tuple(blocks),
                     outputs=tuple(outputs), weights_file=weights, version=1,
                     spec_text=getattr(src, "text", ""), spec_path=path)

    def top_str(self, s: ast.Setting | None, default: str) -> str:
        if s is None:
            return default
        if not isinstance(s.value, str) or not s.value:
            self.err(f"'{s.key}' must be a non-empty string", s.value_span or s.span)
            return default
        return s.value

    def check_name(self, name: str, what: str, span: Span | None) -> None:
        """Names are identifiers, so that both syntaxes can write them."""
        if not _IDENT.fullmatch(name):
            self.err(f"invalid {what} name {name!r}", span,
                     "names are identifiers: letters, digits and '_', not starting with a digit")

    def add_dim(self, d: ast.DimDecl) -> None:
        self.check_name(d.name, "dim", d.span)
        if d.name in self.dims:
            self.err(f"duplicate dim '{d.name}'", d.span)
            return
        if d.value == "dynamic":
            self.dims[d.name] = Dim(d.name, None, d.span)
        elif _is_int(d.value) and d.value > 0:
            self.dims[d.name] = Dim(d.name, d.value, d.span)
        else:
            self.err(f"dim '{d.name}' must be a positive integer or 'dynamic', got {d.value!r}",
                     d.span, did_you_mean(str(d.value), ["dynamic"]))
            self.dims[d.name] = Dim(d.name, None, d.span)
            self.bad_dims.add(d.name)

    def add_input(self, i: ast.InputDecl) -> None:
        self.check_name(i.name, "input", i.span)
        if i.name in self.inputs:
            self.err(f"duplicate input '{i.name}'", i.span)
            return
        dtype = i.dtype or self.dtype
        if dtype not in INPUT_DTYPES:
            self.err(f"unsupported input dtype '{dtype}'", i.dtype_span or i.span,
                     did_you_mean(dtype, INPUT_DTYPES) or f"use one of {', '.join(INPUT_DTYPES)}")
            dtype = self.dtype
        if dtype in FLOAT_DTYPES and dtype != self.dtype:
            self.err(f"float input '{i.name}' is {dtype} but the model dtype is {self.dtype}",
                     i.dtype_span or i.span, f"use {self.dtype} (or omit dtype)")
        shape: list[str | int] = []
        shape_ok = True
        for e in i.shape:
            if isinstance(e.value, str):
                if e.value not in self.dims:
                    self.err(f"unknown dim '{e.value}' in the shape of '{i.name}'", e.span,
                             did_you_mean(e.value, self.dims) or "declare it under 'dims'")
                shape_ok = shape_ok and e.value in self.dims and e.value not in self.bad_dims
            elif not _is_int(e.value) or e.value <= 0:
                self.err(f"invalid dim {e.value!r} in the shape of '{i.name}'", e.span,
                         "sizes are positive integers or dim names")
                shape_ok = False
            shape.append(e.value)
        self.inputs[i.name] = Input(i.name, tuple(shape), dtype, i.span)
        if dtype in FLOAT_DTYPES and len(shape) == 3:
            width = self.size(shape[2]) if shape_ok else None
            self.streams[i.name] = Stream(i.name, shape[0], shape[1], width, False)
            if not shape_ok:
                self.bad_streams.add(i.name)

    def size(self, entry: str | int) -> int | None:
        if _is_int(entry):
            return entry
        d = self.dims.get(entry)
        return d.size if d else None

    # ------------------------------------------------------------ blocks
    def build_blocks(self) -> list[Block]:
        decls = {}
        for b in self.spec.blocks:
            self.check_name(b.name, "block", b.span)
            if b.name in decls:
                self.err(f"duplicate block '{b.name}'", b.span)
            elif b.name in self.inputs:
                self.err(f"block '{b.name}' has the name of an input", b.span,
                         "streams share one namespace")
            else:
                decls[b.name] = b
        order = self.order_blocks(decls)
        out = []
        for name in order:
            blk = self.build_block(decls[name])
            if blk is not None:
                out.append(blk)
                self.streams[blk.name] = Stream(blk.name, self.streams[blk.query].batch,
                                                self.streams[blk.query].seq, blk.out_dim, True)
        return out

    def stream_refs(self, b: ast.BlockDecl) -> list[ast.Setting]:
        return [s for s in b.settings if s.key in ("query", "key_value", "key", "value")]

    def order_blocks(self, decls: dict[str, ast.BlockDecl]) -> list[str]:
        """Blocks in dependency order (stable); cycles and dangling names are errors."""
        deps: dict[str, list[str]] = {}
        for name, b in decls.items():
            deps[name] = []
            for s in self.stream_refs(b):
                ref = s.value
                if not isinstance(ref, str):
                    continue
                if ref in decls:
                    deps[name].append(ref)
                elif ref not in self.inputs:
                    self.err(f"unknown stream '{ref}' in block '{name}'", s.value_span or s.span,
                             did_you_mean(ref, [*self.inputs, *decls])
                             or "a stream is an input or a block")
                elif ref not in self.streams:
                    inp = self.inputs[ref]
                    self.err(f"input '{ref}' is not a stream: streams are float inputs of shape "
                             f"[batch, seq, width], this one is {inp.dtype}{list(inp.shape)}",
                             s.value_span or s.span)
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(n: str, path: list[str]) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                cyc = path[path.index(n):] + [n]
                b = decls[n]
                self.err(f"cyclic stream reference: {' -> '.join(cyc)}", b.span,
                         "a block may read only inputs and blocks that do not read it")
                return
            state[n] = 1
            for d in deps[n]:
                visit(d, path + [n])
            state[n] = 2
            order.append(n)

        for n in decls:
            visit(n, [])
        return order

    def build_block(self, b: ast.BlockDecl) -> Block | None:
        n_err = len(self.errors.errors)
        s = self.block_settings(b)
        project = self.flag(s, "project", True)
        streams = self.block_streams(s, b, project)
        heads = self.pos_int(s, "heads", None, b)
        kv_heads = self.pos_int(s, "kv_heads", heads, b)
        if heads and kv_heads and heads % kv_heads:
            self.err(f"kv_heads {kv_heads} does not divide heads {heads}",
                     s["kv_heads"].value_span or s["kv_heads"].span,
                     "GQA needs heads to be a multiple of kv_heads")
        if streams is None or not heads or not kv_heads:
            self.names_only(s)
            return None
        q, k_stream, v_stream = streams
        if not self.check_streams(b, q, k_stream, v_stream, s) or len(self.errors.errors) > n_err:
            return None
        dims = self.head_dims(s, b, project, heads, kv_heads, q, v_stream)
        if dims is None:
            return None
        head_dim, v_head_dim = dims
        if not project:
            self.check_core_mode(s, b, heads, kv_heads, head_dim, v_head_dim, q, k_stream,
                                 v_stream)
        out_dim = self.pos_int(s, "out_dim", q.width, b) if project else heads * v_head_dim
        bias = False if _mapping(s.get("bias")) else self.flag(s, "bias", False)
        cache, cache_layout, max_len = self.cache_setting(s)
        scale = self.block_scale(s, head_dim)
        self_attn = (k_stream.name == q.name) if project else True
        facts = BlockCheck(self, b.name, heads, kv_heads, head_dim, v_head_dim, project, cache,
                           self_attn, self.dtype, settings=s)
        features = self.block_features(s, facts, b)
        mask = self.mask(s.get("mask"), b, heads, self_attn, cache, q, k_stream)
        score = self.scores(s.get("score"), b, heads)
        if cache_layout == "static":
            self.check_static_cache(s["cache"], self_attn, features, mask, score)
        if len(self.errors.errors) > n_err:
            return None
        return Block(
            name=b.name, query=q.name, key=k_stream.name, value=v_stream.name, heads=heads,
            kv_heads=kv_heads, head_dim=head_dim, v_head_dim=v_head_dim, width_q=q.width,
            width_kv=k_stream.width, out_dim=out_dim, project=project, bias=bias, scale=scale,
            mask=mask, score=score, features=features, cache=cache, self_attention=self_attn,
            cache_layout=cache_layout, cache_max_len=max_len, span=b.span)

    def block_settings(self, b: ast.BlockDecl) -> dict[str, ast.Setting]:
        """The block's settings by key; unknown and repeated keys and an unknown kind are
        reported."""
        s: dict[str, ast.Setting] = {}
        for st in b.settings:
            if st.key not in BLOCK_KEYS:
                self.err(f"unknown key '{st.key}' in block '{b.name}'", st.span,
                         suggest(st.key, BLOCK_KEYS, f"valid keys: {', '.join(BLOCK_KEYS)}"))
            elif st.key in s:
                self.err(f"duplicate key '{st.key}' in block '{b.name}'", st.span)
            else:
                s[st.key] = st
        if b.kind != "attention":
            self.err(f"unknown block kind '{b.kind}'", b.span, "blocks are attention(...)")
        return s

    def block_streams(self, s: dict[str, ast.Setting], b: ast.BlockDecl,
                      project: bool) -> tuple[Stream, Stream, Stream] | None:
        """The query, key and value streams: ``key_value`` with projections, ``key`` and
        ``value`` (or ``key_value``) in core mode; None when one is missing or unknown."""
        q = self.stream(s, "query", b)
        if project:
            for k in ("key", "value"):
                if k in s:
                    self.err(f"'{k}' is for core mode (project: false)", s[k].span,
                             "with projections, use 'key_value'")
            kv = self.stream(s, "key_value", b, default=q.name if q else None)
            k_stream = v_stream = kv
        else:
            if "key_value" in s and ("key" in s or "value" in s):
                self.err("give either 'key_value' or 'key' and 'value'", s["key_value"].span)
            kv_default = s["key_value"].value if "key_value" in s else (q.name if q else None)
            kvkey = "key_value" if "key_value" in s else "key"
            k_stream = self.stream(s, "key" if "key" in s else kvkey, b, default=kv_default)
            v_stream = self.stream(s, "value" if "value" in s else kvkey, b, default=kv_default)
        if q is None or k_stream is None or v_stream is None:
            return None
        return q, k_stream, v_stream

    def check_streams(self, b: ast.BlockDecl, q: Stream, k_stream: Stream, v_stream: Stream,
                      s: dict[str, ast.Setting]) -> bool:
        """Batch dims agree, key and value are as long, every width is fixed; False when a
        width is unknown (the block cannot be built further)."""
        for other in {k_stream.name: k_stream, v_stream.name: v_stream}.values():
            if other.batch != q.batch:
                ref = next(x for x in self.stream_refs(b) if x.value == other.name)
                self.err(f"batch dims differ: '{q.name}' has {q.batch!r}, '{other.name}' has "
                         f"{other.batch!r}", ref.value_span or ref.span)
        if k_stream.seq != v_stream.seq:
            self.err(f"key and value streams have different lengths ({k_stream.seq!r} vs "
                     f"{v_stream.seq!r})", s.get("value", s.get("key", b)).span)
        widths_known = True
        for st in {x.name: x for x in (q, k_stream, v_stream)}.values():
            if st.width is None:
                widths_known = False
                if st.name not in self.bad_streams:  # else its shape was reported
                    self.err(f"stream '{st.name}' needs a fixed width (its last dim)", b.span,
                             "widths are integers, not dynamic dims")
        return widths_known

    def head_dims(self, s: dict[str, ast.Setting], b: ast.BlockDecl, project: bool, heads: int,
                  kv_heads: int, q: Stream, v_stream: Stream) -> tuple[int, int] | None:
        """``head_dim`` (default: query width / heads) and ``v_head_dim`` (default head_dim; in
        core mode the value width / kv_heads)."""
        head_dim = self.pos_int(s, "head_dim", None, b)
        if head_dim is None:
            if q.width % heads:
                self.err(f"query width {q.width} is not divisible by heads {heads}",
                         s["heads"].value_span or s["heads"].span, "set head_dim explicitly")
                return None
            head_dim = q.width // heads
        v_default = head_dim
        if not project and "v_head_dim" not in s and v_stream.width % kv_heads == 0:
            v_default = v_stream.width // kv_heads
        v_head_dim = self.pos_int(s, "v_head_dim", v_default, b)
        if v_head_dim is None:  # not a positive integer: the error is recorded
            return None
        return head_dim, v_head_dim

    def check_core_mode(self, s: dict[str, ast.Setting], b: ast.BlockDecl, heads: int,
                        kv_heads: int, head_dim: int, v_head_dim: int, q: Stream,
                        k_stream: Stream, v_stream: Stream) -> None:
        """Core mode (``project: false``): the streams are the per-head-packed q, k, v, and
        the settings that need projections are errors."""
        for st, want, what in ((q, heads * head_dim, "heads * head_dim"),
                               (k_stream, kv_heads * head_dim, "kv_heads * head_dim"),
                               (v_stream, kv_heads * v_head_dim, "kv_heads * v_head_dim")):
            if st.width != want:
                self.err(f"width mismatch: stream '{st.name}' has width {st.width}, core mode "
                         f"needs {what} = {want}", b.span)
        if "out_dim" in s:
            self.err("out_dim needs projections (project: true)", s["out_dim"].span)
        if "bias" in s and s["bias"].value is True:
            self.err("bias needs projections (project: true)", s["bias"].span)

    def block_scale(self, s: dict[str, ast.Setting], head_dim: int) -> float:
        """``scale`` (default 1 / sqrt(head_dim))."""
        if "scale" not in s:
            return 1.0 / math.sqrt(head_dim)
        v = s["scale"].value
        if _is_number(v) and v > 0:
            return float(v)
        self.err("scale must be a positive number", s["scale"].value_span or s["scale"].span)
        return 1.0 / math.sqrt(head_dim)

    def names_only(self, s: dict[str, ast.Setting]) -> None:
        """Report unknown primitive names of a block that cannot be built further."""
        st = s.get("mask")
        if st is not None and isinstance(st.value, (ast.Call, ast.Not, ast.And, ast.Or)):
            build_mask(st.value, self.errors)
        st = s.get("score")
        if st is not None and isinstance(st.value, tuple):
            for call in st.value:
                build_call(call, SCORES, self.errors, "score modifier")

    def stream(self, s, key, b, default=None) -> Stream | None:
        st = s.get(key)
        if st is not None and not isinstance(st.value, str):  # `key_value:` (null) included
            self.err(f"'{key}' must name a stream", st.value_span or st.span)
            return None
        ref = st.value if st is not None else default
        if ref is None:
            if key == "query" or "query" not in s:
                self.err(f"block '{b.name}' needs '{key}'", b.span, f"add '{key}: <stream>'")
            return None
        if not isinstance(ref, str):
            self.err(f"'{key}' must name a stream", st.value_span or st.span)
            return None
        return self.streams.get(ref)  # unknown names were reported by order_blocks

    def flag(self, s, key, default: bool) -> bool:
        st = s.get(key)
        if st is None:
            return default
        if isinstance(st.value, bool):
            return st.value
        self.err(f"'{key}' must be true or false", st.value_span or st.span,
                 f"or a mapping like {BLOCKS[key].example}" if key in BLOCKS else None)
        return default

    def cache_setting(self, s) -> tuple[bool, str, int | None]:
        """``cache``: ``true`` / ``false`` (a growing cache or none), or a mapping
        ``{layout: growing | static, max_len: N}`` (``.attn``: ``cache layout = static,
        max_len = N``). Returns (cached, layout, max_len)."""
        st = s.get("cache")
        if st is None or not _mapping(st):
            return self.flag(s, "cache", False), "growing", None
        options = {o.name: o for o in CACHE_OPTIONS}
        given: dict[str, ast.Setting] = {}
        n_err = len(self.errors.errors)
        for kw in st.value:
            opt = options.get(kw.key)
            if opt is None:
                self.err(f"unknown cache key '{kw.key}'", kw.span,
                         did_you_mean(kw.key, options) or f"valid keys: {', '.join(options)}")
            elif kw.key in given:
                self.err(f"duplicate key '{kw.key}' in cache", kw.span)
            elif not opt.accepts(kw.value):
                hint = (did_you_mean(kw.value, opt.choices)
                        if opt.kind == "choice" and isinstance(kw.value, str) else None)
                self.err(f"cache {kw.key} must be {opt.describe()}, got {kw.value!r}",
                         kw.value_span or kw.span, hint)
            else:
                given[kw.key] = kw
        layout = given["layout"].value if "layout" in given else "growing"
        max_len = given["max_len"].value if "max_len" in given else None
        if len(self.errors.errors) > n_err:  # no cross-checks on a mapping with a wrong key
            return True, "growing", None
        if layout == "static" and max_len is None:
            self.err("a static cache needs 'max_len' (its slots per sequence)", st.span,
                     "write cache: {layout: static, max_len: 4096}")
        elif layout != "static" and "max_len" in given:
            self.err("'max_len' is for a static cache", given["max_len"].span,
                     "add 'layout: static', or drop 'max_len' for the growing cache")
        return True, layout, max_len if layout == "static" else None

    def check_static_cache(self, st: ast.Setting, self_attn: bool,
                           features: tuple[BlockNode, ...], mask: mn.Mask,
                           score: tuple[mn.Score, ...]) -> None:
        """What a static cache cannot hold: its write position is the position of the first
        new query (self-attention); it holds per-head keys and values (not a feature's own
        layout, MLA's latent); the attention reads all ``max_len`` slots, so inputs laid out
        over the keys (document ids, bool masks, ``bias(t)``) would need the buffer's
        length and are refused."""
        if not self_attn:
            self.err("a static cache needs self-attention (the write position is the "
                     "position of the first new query)", st.span,
                     "use 'cache: true' for cross-attention")
        for f in features:
            if BLOCKS[BLOCKS_BY_NODE[type(f)]].cache is not None:
                self.err(f"a static cache holds per-head keys and values; "
                         f"'{BLOCKS_BY_NODE[type(f)]}' caches its own layout", st.span,
                         "use 'cache: true' with it")
        for node in [*mn.walk(mask), *score]:
            for name, role in rule("inputs", node)(node):
                if role in ("ids", "cells"):
                    self.err(f"a static cache attends over its max_len slots; input '{name}' "
                             f"is laid out over the keys ({role})", st.span,
                             "use 'cache: true' with inputs over the keys")

    def pos_int(self, s, key, default, b) -> int | None:
        st = s.get(key)
        if st is None:
            if default is None and key == "heads":
                self.err(f"block '{b.name}' needs 'heads'", b.span, "add 'heads: <count>'")
            return default
        if _is_int(st.value) and st.value > 0:
            return st.value
        self.err(f"'{key}' must be a positive integer, got {st.value!r}", st.value_span or st.span)
        return None

    def block_features(self, s: dict[str, ast.Setting], facts: BlockCheck,
                       b: ast.BlockDecl) -> tuple[BlockNode, ...]:
        """The block's feature nodes (registry order); ``false`` means absent."""
        out = []
        for key, feature in BLOCKS.items():
            st = s.get(key)
            if st is None or st.value is False or (key in CORE_KEYS and not _mapping(st)):
                continue
            node = self.block_feature(feature, st, facts)
            if node is not None:
                out.append(node)
        nodes = block_order(out)
        for engine in ("reference", "portable"):
            for hook in REPLACING_HOOKS:
                rules = block_rules(engine, hook, nodes)
                if len(rules) > 1:
                    keys = [BLOCKS_BY_NODE[type(n)] for n, _ in rules]
                    self.err(f"block '{b.name}': {' and '.join(keys)} both replace the "
                             f"'{hook}' step", s[keys[1]].span, f"keep one of {', '.join(keys)}")
                    return ()
        return nodes

    def block_feature(self, f: BlockFeature, st: ast.Setting,
                      facts: BlockCheck) -> BlockNode | None:
        """Check one block feature setting against the feature's options and build its node
        (the feature's ``make`` does the cross-checks against the block)."""
        options = {o.name: o for o in f.options}
        given: dict[str, ast.Setting] = {}
        ok = True  # an unknown or repeated key: no cross-checks on what is left (noise)
        if isinstance(st.value, tuple):  # a mapping
            for kw in st.value:
                if kw.key not in options:
                    self.err(f"unknown {f.key} key '{kw.key}'", kw.span,
                             suggest(kw.key, options, f"valid keys: {', '.join(options)}"))
                    ok = False
                elif kw.key in given:
                    self.err(f"duplicate key '{kw.key}' in {f.key}", kw.span)
                    ok = False
                else:
                    given[kw.key] = kw
        else:
            short = f.shorthand(st.value)
            if short is None:
                choices = [c for o in f.options for c in o.choices]
                hint = did_you_mean(str(st.value), choices) if isinstance(st.value, str) else None
                self.err(f"{f.key} must be a mapping like {f.example}", st.value_span or st.span,
                         hint or (f"or one of true, false, {', '.join(choices)}" if choices
                                  else "or true (the defaults) or false (none)"))
                return None
            given = {k: ast.Setting(k, v, st.span, st.value_span or st.span)
                     for k, v in short.items()}
        values: dict[str, object] = {}
        for name, opt in options.items():
            kw = given.get(name)
            if kw is None:
                values[name] = opt.default
            elif opt.accepts(kw.value):
                values[name] = opt.convert(kw.value)
            else:
                ok = False
                hint = (did_you_mean(kw.value, opt.choices)
                        if opt.kind == "choice" and isinstance(kw.value, str) else None)
                self.err(f"{f.key} {name} must be {opt.describe()}, got {kw.value!r}"
                         if opt.kind in ("int", "choice") else
                         f"{f.key} {name} must be {opt.describe()}",
                         kw.value_span or kw.span, hint)
        if not ok:
            return None
        spans = {k: kw.value_span or kw.span for k, kw in given.items()}
        return f.make(values, dataclasses.replace(facts, setting=st, spans=spans))

    def check_input(self, name: str, span, what: str, kinds: tuple[str, ...],
                    rank: tuple[int, ...]):
        inp = self.inputs.get(name)
        if inp is None:
            self.err(f"unknown input '{name}' in {what}", span,
                     did_you_mean(name, self.inputs) or "declare it under 'inputs'")
            return None
        if inp.dtype not in kinds:
            self.err(f"{what} needs a {' or '.join(kinds)} input; '{name}' is {inp.dtype}", span)
        elif len(inp.shape) not in rank:
            self.err(f"{what} needs an input of rank {' or '.join(map(str, rank))}; '{name}' has "
                     f"shape {list(inp.shape)}", span)
        return inp

    def mask(self, st, b, heads, self_attn, cache, q: Stream, k: Stream) -> mn.Mask:
        if st is None or st.value is None:  # None: the front end reported it
            return mn.All()
        if not isinstance(st.value, (ast.Call, ast.Not, ast.And, ast.Or)):
            self.err("mask must be a mask expression", st.value_span or st.span)
            return mn.All()
        m = build_mask(st.value, self.errors)
        if m is None:
            return mn.All()
        ctx = NodeCheck(self, heads, self_attn, cache, q, k)
        for node in mn.walk(m):
            ctx.check(node)
        return m

    def check_ids_length(self, ids: Input, span, k_seq: str | int, cache: bool) -> None:
        """document ids are [batch, k_len]: the key length, which with a cache is past + new."""
        same = ids.shape[1] == k_seq or (
            self.size(ids.shape[1]) is not None and self.size(ids.shape[1]) == self.size(k_seq))
        if cache and same:
            self.err(f"with a cache, document ids cover the past and the new keys; '{ids.name}' "
                     f"has the length of the new keys ({ids.shape[1]!r})", span,
                     f"give '{ids.name}' its own dynamic dim, e.g. [batch, total_len]")
        elif not cache and not same:
            self.err(f"document ids must be [batch, k_len]: '{ids.name}' has length "
                     f"{ids.shape[1]!r}, the keys have {k_seq!r}", span)

    def scores(self, st, b, heads) -> tuple[mn.Score, ...]:
        if st is None:
            return ()
        if not isinstance(st.value, tuple):
            self.err("score must be a list of modifiers", st.value_span or st.span)
            return ()
        out = []
        ctx = NodeCheck(self, heads)
        for call in st.value:
            node = build_call(call, SCORES, self.errors, "score modifier")
            if node is None:
                continue
            ctx.check(node)
            out.append(node)
        return tuple(out)

    # ------------------------------------------------------------ outputs
    def build_outputs(self, blocks: dict[str, Block]) -> list[Output]:
        out: list[Output] = []
        seen: set[str] = set()
        for o in self.spec.outputs:
            self.check_name(o.name, "output", o.span)
            if o.name in seen:
                self.err(f"duplicate output '{o.name}'", o.span)
                continue
            if o.name in self.inputs:
                self.err(f"output '{o.name}' has the name of an input", o.span,
                         "graph inputs and outputs need distinct names")
                continue
            seen.add(o.name)
            if o.stream not in blocks:
                known = {d.name for d in self.spec.blocks}
                if o.stream not in known:
                    self.err(f"unknown block '{o.stream}' in output '{o.name}'", o.span,
                             did_you_mean(o.stream, known) or "outputs name blocks")
                continue
            if o.attr not in (None, "weights"):
                self.err(f"unknown block attribute '{o.attr}'", o.span,
                         "use '<block>' or '<block>.weights'")
                continue
            out.append(Output(o.name, o.stream, o.attr, o.span))
        if not self.spec.outputs:
            self.err("the spec has no outputs", self.spec.version.span,
                     "add 'outputs: {y: <block>}'")
        return out


@dataclass(frozen=True)
class NodeCheck:
    """What a feature's ``check`` hook receives: the block's facts (``heads``, ``self_attn``,
    ``cache``, the query and key streams ``q``/``k``) and the builder's checks."""

    builder: Builder
    heads: int
    self_attn: bool = True
    cache: bool = False
    q: Stream | None = None
    k: Stream | None = None
    float_dtypes: tuple[str, ...] = FLOAT_DTYPES

    def check(self, node: object) -> None:
        """Run the node's feature check, if it has one."""
        hook = feature_of(node).check
        if hook is not None:
            hook(node, self)

    def err(self, msg: str, span: Span | None, hint: str | None = None) -> None:
        self.builder.err(msg, span, hint)

    def size(self, entry: str | int) -> int | None:
        return self.builder.size(entry)

    def check_input(self, name: str, span, what: str, kinds: tuple[str, ...],
                    rank: tuple[int, ...]) -> Input | None:
        return self.builder.check_input(name, span, what, kinds, rank)

    def check_ids_length(self, ids: Input, span, k_seq: str | int, cache: bool) -> None:
        self.builder.check_ids_length(ids, span, k_seq, cache)


@dataclass(frozen=True)
class BlockCheck:
    """What a block feature's ``make`` receives: the block's facts and the builder's error
    report. ``span(option)`` is where an option's value was written (the setting's span
    when the option was not given, or for ``span(None)``)."""

    builder: Builder
    block: str
    heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    project: bool
    cache: bool
    self_attn: bool
    dtype: str
    setting: ast.Setting | None = None
    spans: Mapping[str, Span] = dataclasses.field(default_factory=dict)
    # the block's settings by key as written (a feature's cross-checks against another
    # setting of the block, e.g. MLA against the block's rope)
    settings: Mapping[str, ast.Setting] = dataclasses.field(default_factory=dict)

    def err(self, msg: str, span: Span | None, hint: str | None = None) -> None:
        self.builder.err(msg, span, hint)

    def span(self, option: str | None) -> Span | None:
        if option is not None and option in self.spans:
            return self.spans[option]
        st = self.setting
        return None if st is None else st.span

    def given(self, option: str) -> bool:
        """Whether the spec gave ``option`` (not its default)."""
        return option in self.spans


BLOCKS_BY_NODE = {f.node: key for key, f in BLOCKS.items()}


def feature_setting(node: BlockNode) -> ast.Setting:
    """A block feature node as the syntax tree setting that builds it again (every option
    written out), for the writers: ``write_yaml`` / ``write_dsl`` print it like any
    setting."""
    feature = BLOCKS[BLOCKS_BY_NODE[type(node)]]
    return ast.Setting(feature.key, tuple(ast.Setting(k, list(v) if isinstance(v, tuple) else v)
                                          for k, v in feature.format(node)))


def build_ir(spec: ast.SpecAST) -> Model:
    """Resolve and check a parsed spec; raises SpecError / SpecErrors."""
    return Builder(spec).build()
