"""The parts an attention module of a transformers checkpoint is made of.

An architecture (``architectures.py``) is a declaration that picks one part of each kind:

- **sizes** (``Sizes``): which config keys give the width, heads, kv heads and head size;
- **projections** (``Separate``, ``Conv1DFused``, ``HeadFused``, ``GroupFused``,
  ``Stacked``): how the checkpoint stores q, k, v and o, converted to the contract's four
  ``[out, in]`` Linear weights;
- **RoPE** (``Rope``): theta, partial rotary, interleaved pairs, per-layer-type parameters,
  NoPE layers, and transformers' scalings (``rope_type`` linear, dynamic, llama3, yarn,
  longrope) as the rope feature's ``scaling`` options;
- **mask** (``CausalMask``, ``NoMask``): causal or bidirectional, with the layer's sliding
  window or attention chunk;
- **score modifiers** (``Softcap``, ``Alibi``, ``T5RelativeBias``);
- **scale** (``HeadDimScale``, ``KeyScale``, ``QueryPreAttnScalar``, ``GPT2Scale``,
  ``NoScale``);
- **block features** (``QKNorm``, ``Sinks``, ``ClipQKV``, ``Diff``, ``MLA`` with the
  ``MLAProjection`` projections, ``OutputGate`` with ``Separate(gated=True)``,
  ``TemperatureTuning``): the ``features`` of ``Spec.add_block``, with their weights;
- **needs** (``Needs``): a feature the spec language does not have yet, with the condition
  under which the checkpoint uses it; the import stops there with an error naming it.

Each part lists the config keys it reads (``keys``); together they are the architecture's
table of attention keys. A part refuses (``HFImportError``) every value it cannot express.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...features.rope_scaling import ROPE_TYPES, allowed_keys, validate_rope_scaling
from ...features.scores.alibi import alibi_slopes
from .config import Config, HFImportError

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Geometry:
    """The sizes of one attention module."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    kv_width: int  # width of the key/value stream (the encoder's for cross-attention)


@dataclass
class Ctx:
    """One module being imported: where it is, its layer, and its parameters (names relative
    to the module). Parts ``take`` the parameters they place; what is left is an error."""

    cfg: Config
    path: str
    layer: int
    layer_type: str | None
    read: Callable[[str], np.ndarray]
    params: set[str]
    taken: set[str] = field(default_factory=set)

    def has(self, name: str) -> bool:
        return name in self.params

    def take(self, name: str) -> np.ndarray:
        if name not in self.params:
            raise self.error(f"expected the parameter '{self.path}.{name}', which the "
                             "checkpoint does not have")
        self.taken.add(name)
        return np.asarray(self.read(f"{self.path}.{name}"), np.float32)

    def take_opt(self, name: str) -> np.ndarray | None:
        return self.take(name) if name in self.params else None

    def error(self, message: str, hint: str | None = None) -> HFImportError:
        return HFImportError(f"{self.cfg.where(self.path)}{message}", hint=hint)


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """Config keys of the sizes. ``kv_heads`` None: as many as ``heads`` (MHA);
    ``head_dim`` None: ``hidden / heads``; ``kv_width`` names the key/value stream's width
    for cross-attention (default: ``hidden``)."""

    hidden: str = "hidden_size"
    heads: str = "num_attention_heads"
    kv_heads: str | None = "num_key_value_heads"
    head_dim: str | None = "head_dim"

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.hidden, self.heads, self.kv_heads, self.head_dim) if k)

    def geometry(self, ctx: Ctx) -> Geometry:
        cfg = ctx.cfg
        hidden = cfg.int(self.hidden, module=ctx.path)
        heads = cfg.int(self.heads, module=ctx.path)
        kv = cfg.int(self.kv_heads, heads, ctx.path) if self.kv_heads else heads
        if heads % kv:
            raise ctx.error(f"'{self.kv_heads}' = {kv} does not divide '{self.heads}' = {heads}")
        if self.head_dim and cfg.get(self.head_dim) is not None:
            hd = cfg.int(self.head_dim, module=ctx.path)
        else:
            if hidden % heads:
                raise ctx.error(f"'{self.hidden}' = {hidden} is not a multiple of "
                                f"'{self.heads}' = {heads}")
            hd = hidden // heads
        return Geometry(hidden, heads, kv, hd, hidden)


# --------------------------------------------------------------------------- projections


@dataclass(frozen=True)
class Projected:
    """The four projections in the contract's layout (``[out, in]``); a bias is None when the
    module has none."""

    weights: dict[str, np.ndarray]   # 'q' 'k' 'v' 'o' -> [out, in]
    biases: dict[str, np.ndarray | None]

    def arrays(self) -> tuple[Arrays, bool | dict[str, bool], list[str]]:
        """The contract arrays (``q_proj.weight`` ...), the block's ``bias`` setting and notes:
        ``True`` when all four projections have a bias, ``{q: true, ...}`` naming those that
        have one (Qwen2's q, k, v; Whisper's q, v, o), ``False`` for none."""
        out: Arrays = {f"{p}_proj.weight": self.weights[p] for p in "qkvo"}
        has = [p for p in "qkvo" if self.biases[p] is not None]
        for p in has:
            out[f"{p}_proj.bias"] = self.biases[p]
        bias: bool | dict[str, bool] = len(has) == 4 or (dict.fromkeys(has, True) if has
                                                         else False)
        return out, bias, []


def _check_shape(ctx: Ctx, name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != shape:
        raise ctx.error(f"parameter '{ctx.path}.{name}' has shape {list(a.shape)}, expected "
                        f"{list(shape)} from the config")


@dataclass(frozen=True)
class Separate:
    """Four ``nn.Linear`` modules (Llama's ``q_proj`` ... ``o_proj``, GPT-J's ``out_proj``,
    Phi's ``dense``, T5's ``q``/``k``/``v``/``o``); each bias is optional."""

    q: str = "q_proj"
    k: str = "k_proj"
    v: str = "v_proj"
    o: str = "o_proj"
    gated: bool = False  # q_proj also holds the output gate's rows (Qwen3-Next): 2x the rows

    def convert(self, ctx: Ctx, g: Geometry) -> Projected:
        q_rows = g.heads * g.head_dim * (2 if self.gated else 1)
        shapes = {"q": (q_rows, g.hidden), "k": (g.kv_heads * g.head_dim, g.kv_width),
                  "v": (g.kv_heads * g.head_dim, g.kv_width),
                  "o": (g.hidden, g.heads * g.head_dim)}
        w, b = {}, {}
        for p, name in (("q", self.q), ("k", self.k), ("v", self.v), ("o", self.o)):
            w[p] = ctx.take(f"{name}.weight")
            _check_shape(ctx, f"{name}.weight", w[p], shapes[p])
            b[p] = ctx.take_opt(f"{name}.bias")
            if b[p] is not None:
                _check_shape(ctx, f"{name}.bias", b[p], shapes[p][:1])
        return Projected(w, b)


def _split_rows(a: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(a, np.cumsum(sizes)[:-1], axis=0)


@dataclass(frozen=True)
class Stacked:
    """One Linear whose output rows are q, then k, then v (Phi-3 ``qkv_proj``, MPT ``Wqkv``,
    Falcon multi-query ``query_key_value``: ``heads + 2`` heads of which the last two are
    the one key and value head), and the output Linear ``o``."""

    qkv: str
    o: str

    def convert(self, ctx: Ctx, g: Geometry) -> Projected:
        sizes = [g.heads * g.head_dim, g.kv_heads * g.head_dim, g.kv_heads * g.head_dim]
        w = ctx.take(f"{self.qkv}.weight")
        _check_shape(ctx, f"{self.qkv}.weight", w, (sum(sizes), g.hidden))
        bias = ctx.take_opt(f"{self.qkv}.bias")
        q, k, v = _split_rows(w, sizes)
        bq = bk = bv = None
        if bias is not None:
            _check_shape(ctx, f"{self.qkv}.bias", bias, (sum(sizes),))
            bq, bk, bv = _split_rows(bias, sizes)
        return _with_output(ctx, g, self.o, {"q": q, "k": k, "v": v},
                            {"q": bq, "k": bk, "v": bv})


def _with_output(ctx: Ctx, g: Geometry, o: str, w: dict, b: dict) -> Projected:
    wo = ctx.take(f"{o}.weight")
    _check_shape(ctx, f"{o}.weight", wo, (g.hidden, g.heads * g.head_dim))
    bo = ctx.take_opt(f"{o}.bias")
    if bo is not None:
        _check_shape(ctx, f"{o}.bias", bo, (g.hidden,))
    return Projected({**w, "o": wo}, {**b, "o": bo})


@dataclass(frozen=True)
class Conv1DFused:
    """GPT-2: ``c_attn`` is a ``Conv1D`` (weight ``[in, 3*hidden]``, ``y = x @ W + b``) whose
    columns are q, k, v; ``c_proj`` a ``Conv1D`` too. Transposed to ``[out, in]``."""

    qkv: str = "c_attn"
    o: str = "c_proj"

    def convert(self, ctx: Ctx, g: Geometry) -> Projected:
        width = g.heads * g.head_dim
        w = ctx.take(f"{self.qkv}.weight")
        _check_shape(ctx, f"{self.qkv}.weight", w, (g.hidden, 3 * width))
        q, k, v = _split_rows(np.ascontiguousarray(w.T), [width] * 3)
        bias = ctx.take_opt(f"{self.qkv}.bias")
        bq = bk = bv = None
        if bias is not None:
            _check_shape(ctx, f"{self.qkv}.bias", bias, (3 * width,))
            bq, bk, bv = _split_rows(bias, [width] * 3)
        wo = ctx.take(f"{self.o}.weight")
        _check_shape(ctx, f"{self.o}.weight", wo, (width, g.hidden))
        bo = ctx.take_opt(f"{self.o}.bias")
        return Projected({"q": q, "k": k, "v": v, "o": np.ascontiguousarray(wo.T)},
                         {"q": bq, "k": bk, "v": bv, "o": bo})


@dataclass(frozen=True)
class HeadFused:
    """GPT-NeoX, BLOOM, Falcon (multi-head): ``query_key_value`` rows are per head
    ``[heads, 3, head_dim]`` (head h's q rows, then its k rows, then its v rows)."""

    qkv: str = "query_key_value"
    o: str = "dense"

    def convert(self, ctx: Ctx, g: Geometry) -> Projected:
        if g.kv_heads != g.heads:
            raise ctx.error("a per-head fused query_key_value needs as many kv heads as heads")
        h, d = g.heads, g.head_dim
        w = ctx.take(f"{self.qkv}.weight")
        _check_shape(ctx, f"{self.qkv}.weight", w, (3 * h * d, g.hidden))
        w4 = w.reshape(h, 3, d, g.hidden)
        ws = {p: np.ascontiguousarray(w4[:, i].reshape(h * d, g.hidden))
              for i, p in enumerate("qkv")}
        bias = ctx.take_opt(f"{self.qkv}.bias")
        bs: dict[str, np.ndarray | None] = dict.fromkeys("qkv")
        if bias is not None:
            _check_shape(ctx, f"{self.qkv}.bias", bias, (3 * h * d,))
            b3 = bias.reshape(h, 3, d)
            bs = {p: np.ascontiguousarray(b3[:, i].reshape(h * d)) for i, p in enumerate("qkv")}
        return _with_output(ctx, g, self.o, ws, bs)


@dataclass(frozen=True)
class GroupFused:
    """Falcon's new decoder architecture: ``query_key_value`` rows are per kv group
    ``[kv_heads, heads / kv_heads + 2, head_dim]``: the group's query heads, then its key
    head, then its value head."""

    qkv: str = "query_key_value"
    o: str = "dense"

    def convert(self, ctx: Ctx, g: Geometry) -> Projected:
        h, kv, d = g.heads, g.kv_heads, g.head_dim
        per = h // kv
        w = ctx.take(f"{self.qkv}.weight")
        _check_shape(ctx, f"{self.qkv}.weight", w, ((h + 2 * kv) * d, g.hidden))
        w4 = w.reshape(kv, per + 2, d, g.hidden)
        ws = {"q": w4[:, :per].reshape(h * d, g.hidden), "k": w4[:, per].reshape(kv * d, -1),
              "v": w4[:, per + 1].reshape(kv * d, g.hidden)}
        bias = ctx.take_opt(f"{self.qkv}.bias")
        bs: dict[str, np.ndarray | None] = dict.fromkeys("qkv")
        if bias is not None:
            _check_shape(ctx, f"{self.qkv}.bias", bias, ((h + 2 * kv) * d,))
            b3 = bias.reshape(kv, per + 2, d)
            bs = {"q": b3[:, :per].reshape(-1), "k": b3[:, per].reshape(-1),
                  "v": b3[:, per + 1].reshape(-1)}
        ws = {p: np.ascontiguousarray(a) for p, a in ws.items()}
        return _with_output(ctx, g, self.o, ws, bs)


# --------------------------------------------------------------------------- RoPE


def _rope_parameters(ctx: Ctx, aliases: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """The RoPE parameters of the module's layer: transformers 5's ``rope_parameters`` (per
    layer type when it is keyed by layer types, as Gemma 3's), else the older top-level
    ``rope_theta`` / ``rope_scaling`` / ``partial_rotary_factor``, and the architecture's
    older names for them (``aliases``: GPT-NeoX's ``rotary_emb_base``, ``rotary_pct``)."""
    cfg = ctx.cfg
    params = cfg.get("rope_parameters")
    if isinstance(params, Mapping):
        if params and all(isinstance(v, Mapping) for v in params.values()):
            if ctx.layer_type not in params:
                raise ctx.error(f"config key 'rope_parameters' has no entry for this layer's "
                                f"type '{ctx.layer_type}'")
            params = params[ctx.layer_type]
        return dict(params)
    out: dict[str, Any] = {new: cfg.get(old) for old, new in aliases
                           if cfg.get(old) is not None}
    if cfg.get("rope_theta") is not None:
        out["rope_theta"] = cfg.get("rope_theta")
    if cfg.get("partial_rotary_factor") is not None:
        out["partial_rotary_factor"] = cfg.get("partial_rotary_factor")
    scaling = cfg.get("rope_scaling")
    if isinstance(scaling, Mapping):
        out.update(scaling)
        out["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    return out


# keys of a "default" rope_parameters entry (others belong to scaled rope types)
_DEFAULT_ROPE_KEYS = {"rope_theta", "rope_type", "partial_rotary_factor"}


@dataclass(frozen=True)
class Rope:
    """Rotary embedding. ``interleaved``: adjacent pairs (GPT-J) instead of halves;
    ``dim_key``: a config key giving the rotated features directly (GPT-J ``rotary_dim``)
    instead of ``partial_rotary_factor``; ``fixed_theta``: the architecture's theta when it
    has no config key (GPT-J's 10000); ``nope_key``: per-layer flags, 0 = no RoPE on that
    layer (``no_rope_layers``); ``aliases``: older config keys of the architecture and the
    ``rope_parameters`` entry each stands for."""

    interleaved: bool = False
    dim_key: str | None = None
    fixed_theta: float | None = None
    nope_key: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        if self.fixed_theta is not None:
            return tuple(k for k in (self.dim_key, self.nope_key) if k)
        return tuple(k for k in ("rope_parameters", "rope_theta", "rope_scaling",
                                 "partial_rotary_factor", self.dim_key, self.nope_key,
                                 *(old for old, _ in self.aliases)) if k)

    def settings(self, ctx: Ctx, g: Geometry) -> dict[str, Any] | None:
        cfg = ctx.cfg
        if self.nope_key and cfg.get(self.nope_key) is not None:
            flags = cfg.get(self.nope_key)
            if not isinstance(flags, list) or ctx.layer >= len(flags):
                raise ctx.error(f"config key '{self.nope_key}' must list a flag per layer")
            if not flags[ctx.layer]:
                return None
        if self.fixed_theta is not None:
            theta, factor, scaling = self.fixed_theta, 1.0, None
        else:
            p = _rope_parameters(ctx, self.aliases)
            kind = p.get("rope_type", "default")
            if kind not in ROPE_TYPES:
                raise ctx.error(f"rope_type '{kind}' (config key 'rope_parameters.rope_type' / "
                                "'rope_scaling') is not a RoPE the spec language knows",
                                hint="known: " + ", ".join(ROPE_TYPES))
            required, optional = allowed_keys(kind)
            extra = sorted(set(p) - _DEFAULT_ROPE_KEYS - required - optional - {"type"})
            if extra:
                raise ctx.error(f"rope parameter '{extra[0]}' is not used by the {kind} rope "
                                "type; refusing a RoPE the importer cannot place")
            theta = float(p.get("rope_theta", 10000.0))
            factor = float(p.get("partial_rotary_factor", 1.0))
            scaling = _scaling(ctx, p, kind, required | optional)
        # transformers: int(head_dim * partial_rotary_factor), or GPT-J's rotary_dim
        dim = (cfg.get(self.dim_key) or g.head_dim) if self.dim_key else int(g.head_dim * factor)
        if dim % 2 or not 2 <= dim <= g.head_dim:
            raise ctx.error(f"rotary dimension {dim} (head_dim {g.head_dim}) must be even and "
                            "between 2 and head_dim")
        out: dict[str, Any] = {"theta": theta}
        if dim != g.head_dim:
            out["dim"] = int(dim)
        if self.interleaved:
            out["interleaved"] = True
        if scaling:
            problems = validate_rope_scaling(scaling, dim=int(dim))
            if problems:
                key, msg, hint = problems[0]
                raise ctx.error(f"rope scaling ('rope_parameters.{key}'): {msg}",
                                hint=hint or None)
            out["scaling"] = scaling.pop("rope_type")
            out.update(scaling)
        return out


def _scaling(ctx: Ctx, p: Mapping[str, Any], kind: str,
             keys: frozenset[str]) -> dict[str, Any] | None:
    """The rope feature's scaling options of a ``rope_parameters`` entry (None: plain RoPE):
    its scaling keys, and the model config's ``max_position_embeddings`` for the types that
    read it. Phi-3's config keeps ``original_max_position_embeddings`` at the top level,
    which overrides the entry's (as transformers 5.23's Phi-3 config does)."""
    if kind == "default":
        return None
    out: dict[str, Any] = {"rope_type": kind}
    for k in sorted(keys - {"rope_type", "max_position_embeddings"}):
        if p.get(k) is not None:
            v = p[k]
            out[k] = [float(x) for x in v] if isinstance(v, list) else v
    top = ctx.cfg.get("original_max_position_embeddings")
    if top is not None and "original_max_position_embeddings" in keys:
        out["original_max_position_embeddings"] = top
    if "max_position_embeddings" in keys and ctx.cfg.get("max_position_embeddings") is not None:
        out["max_position_embeddings"] = ctx.cfg.get("max_position_embeddings")
    return out


# --------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class NoMask:
    """Bidirectional (encoders) and cross-attention: every key."""

    keys: tuple[str, ...] = ()

    def layer_type(self, cfg: Config, layer: int, n_layers: int, path: str) -> str | None:
        return None

    def expr(self, ctx: Ctx) -> str | None:
        return None


@dataclass(frozen=True)
class CausalMask:
    """Causal, with the layer's window. ``windows``:

    - ``"none"``: no window keys (Llama);
    - ``"all"``: ``sliding_window`` (None: no window) on every layer (Mistral, Phi-3);
    - ``"layer_types"``: per layer from ``layer_types`` (``sliding_attention``: a
      ``sliding_window`` window; ``chunked_attention``: ``attention_chunk_size`` chunks;
      ``full_attention``: none). A config without ``layer_types`` (written before
      transformers 5) gets the architecture's default, as its config class computes it
      (``default``): ``"alternate"`` (sliding, full, sliding, ...: Gemma 2, gpt-oss),
      ``"pattern"`` (every ``sliding_window_pattern``-th layer full, default 6; Gemma 3's
      config saves it as ``_sliding_window_pattern``),
      ``"max_window_layers"`` (layers from ``max_window_layers``, default 28, slide when
      ``use_sliding_window``: Qwen2, Qwen3) or ``"full"``.
    """

    windows: str = "none"
    default: str = "full"

    @property
    def keys(self) -> tuple[str, ...]:
        if self.windows == "none":
            return ("use_bidirectional_attention",)
        if self.windows == "all":
            return ("sliding_window", "use_bidirectional_attention")
        return ("layer_types", "sliding_window", "sliding_window_pattern",
                "_sliding_window_pattern", "use_sliding_window", "max_window_layers",
                "attention_chunk_size", "use_bidirectional_attention")

    def layer_type(self, cfg: Config, layer: int, n_layers: int, path: str) -> str | None:
        """The layer's type (None for masks without per-layer types)."""
        if self.windows != "layer_types":
            return None
        types = cfg.get("layer_types")
        if types is not None:
            if not isinstance(types, list) or len(types) != n_layers:
                raise HFImportError(f"{cfg.where(path)}config key 'layer_types' must list "
                                    f"{n_layers} layer types")
            return types[layer]
        sliding = cfg.get("sliding_window") is not None
        if self.default == "alternate":
            slides = sliding and (layer + 1) % 2 == 1
        elif self.default == "pattern":
            pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6))
            slides = sliding and (layer + 1) % int(pattern) != 0
        elif self.default == "max_window_layers":
            slides = (sliding and bool(cfg.get("use_sliding_window", False))
                      and layer >= int(cfg.get("max_window_layers", 28)))
        else:
            slides = False
        return "sliding_attention" if slides else "full_attention"

    def expr(self, ctx: Ctx) -> str | None:
        cfg = ctx.cfg
        if cfg.get("use_bidirectional_attention"):
            raise ctx.error("not yet supported by the importer: config key "
                            "'use_bidirectional_attention' = true")
        if self.windows == "none":
            return "causal"
        kind = ctx.layer_type
        if self.windows == "all":
            kind = "sliding_attention" if cfg.get("sliding_window") else "full_attention"
        if kind == "sliding_attention" and "use_sliding_window" in cfg and \
                not cfg.get("use_sliding_window"):
            kind = "full_attention"  # Qwen2: use_sliding_window false drops the window
        if kind in (None, "full_attention"):
            return "causal"
        if kind == "sliding_attention":
            w = cfg.int("sliding_window", module=ctx.path)
            return f"causal & sliding({w})"
        if kind == "chunked_attention":
            c = cfg.int("attention_chunk_size", module=ctx.path)
            return f"causal & chunk({c})"
        raise ctx.error(f"layer type '{kind}' (config key 'layer_types') is not attention "
                        "the spec language can express",
                        hint="only full_attention, sliding_attention and chunked_attention "
                        "layers import")


# --------------------------------------------------------------------------- score modifiers


@dataclass(frozen=True)
class Softcap:
    """``key``: tanh soft-capping of the scaled logits (Gemma 2 ``attn_logit_softcapping``)."""

    key: str = "attn_logit_softcapping"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def modifier(self, ctx: Ctx, g: Geometry, refs: Mapping[str, str]) -> tuple[str | None, Arrays]:
        v = ctx.cfg.get(self.key)
        if v is None:
            return None, {}
        return f"softcap({float(ctx.cfg.number(self.key, module=ctx.path))!r})", {}


def bloom_slopes(heads: int) -> np.ndarray:
    """BLOOM / Falcon ``_get_alibi_slopes``."""
    closest = 2 ** math.floor(math.log2(heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base ** p for p in range(1, closest + 1)]
    if closest != heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        n = min(closest, heads - closest)
        slopes += [extra ** p for p in range(1, 1 + 2 * n, 2)]
    return np.asarray(slopes)


def mpt_slopes(heads: int, bias_max: int = 8) -> np.ndarray:
    """MPT ``build_mpt_alibi_tensor``'s slopes."""
    p2 = 2 ** math.ceil(math.log2(heads))
    slopes = 1.0 / 2.0 ** (np.arange(1, p2 + 1, dtype=np.float64) * (bias_max / p2))
    if p2 != heads:
        slopes = np.concatenate([slopes[1::2], slopes[::2]])[:heads]
    return slopes


@dataclass(frozen=True)
class Alibi:
    """ALiBi with the architecture's slopes. BLOOM adds ``slope * k`` and MPT ``slope * (k -
    k_len + 1)``; under a causal mask both differ from the spec's ``-slope * |q - k|`` by a
    constant per query row, which softmax ignores. The slopes must equal the spec's
    (``alibi_slopes``); ``kind`` 'mpt' requires ``attn_config.alibi_bias_max`` 8, the value
    transformers uses whatever the config says."""

    kind: str = "bloom"

    @property
    def keys(self) -> tuple[str, ...]:
        return ("attn_config.alibi", "attn_config.alibi_bias_max") if self.kind == "mpt" else ()

    def modifier(self, ctx: Ctx, g: Geometry, refs: Mapping[str, str]) -> tuple[str | None, Arrays]:
        if self.kind == "mpt":
            if ctx.cfg.get("attn_config.alibi", True) is not True:
                raise ctx.error("config key 'attn_config.alibi' = false: transformers' MPT "
                                "applies ALiBi regardless; refusing the ambiguity")
            if ctx.cfg.get("attn_config.alibi_bias_max", 8) != 8:
                raise ctx.error("config key 'attn_config.alibi_bias_max' must be 8 (the value "
                                "transformers' MPT uses whatever the config says)")
            slopes = mpt_slopes(g.heads)
        else:
            slopes = bloom_slopes(g.heads)
        if not np.allclose(slopes, alibi_slopes(g.heads), rtol=1e-12, atol=0):
            raise ctx.error(f"the ALiBi slopes of {g.heads} heads differ from the spec "
                            "language's alibi slopes", hint="needs ALiBi with custom slopes")
        return "alibi", {}


@dataclass(frozen=True)
class T5RelativeBias:
    """T5's learned relative position bias: only the first layer of a stack has the table
    ``relative_attention_bias.weight`` ``[buckets, heads]``; every self-attention layer of
    the stack adds it (``shared_from`` names the first layer's module, relative to this one's
    root). Bidirectional in the encoder, not in the decoder."""

    table: str = "relative_attention_bias.weight"

    keys: tuple[str, ...] = ("relative_attention_num_buckets",
                             "relative_attention_max_distance", "is_decoder")

    def modifier(self, ctx: Ctx, g: Geometry, refs: Mapping[str, str]) -> tuple[str | None, Arrays]:
        cfg = ctx.cfg
        buckets = cfg.int("relative_attention_num_buckets", 32, ctx.path)
        dist = cfg.int("relative_attention_max_distance", 128, ctx.path)
        first = refs["first"]
        if ctx.has(self.table):
            table = ctx.take(self.table)
        else:
            table = np.asarray(ctx.read(f"{first}.{self.table}"), np.float32)
        if tuple(table.shape) != (buckets, g.heads):
            raise ctx.error(f"'{first}.{self.table}' has shape {list(table.shape)}, expected "
                            f"{[buckets, g.heads]}")
        bidir = refs["stack"] == "encoder"
        text = (f"relative_bias(buckets={buckets}, max_distance={dist}, "
                f"bidirectional={'true' if bidir else 'false'})")
        return text, {"relative_bias.weight": table}


# --------------------------------------------------------------------------- scale


@dataclass(frozen=True)
class HeadDimScale:
    """``1 / sqrt(head_dim)``: the spec's default."""

    keys: tuple[str, ...] = ()

    def scale(self, ctx: Ctx, g: Geometry) -> float | None:
        return None


@dataclass(frozen=True)
class NoScale:
    """T5: logits are not scaled."""

    keys: tuple[str, ...] = ()

    def scale(self, ctx: Ctx, g: Geometry) -> float | None:
        return 1.0


@dataclass(frozen=True)
class KeyScale:
    """A config key is the scale itself (Granite ``attention_multiplier``, MPT
    ``attn_config.softmax_scale``); absent: ``1 / sqrt(head_dim)``."""

    key: str

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def scale(self, ctx: Ctx, g: Geometry) -> float | None:
        if ctx.cfg.get(self.key) is None:
            return None
        return ctx.cfg.number(self.key, module=ctx.path)


@dataclass(frozen=True)
class QueryPreAttnScalar:
    """Gemma 2: ``query_pre_attn_scalar ** -0.5``."""

    key: str = "query_pre_attn_scalar"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def scale(self, ctx: Ctx, g: Geometry) -> float | None:
        if ctx.cfg.get(self.key) is None:
            return None
        return ctx.cfg.number(self.key, module=ctx.path) ** -0.5


@dataclass(frozen=True)
class GPT2Scale:
    """GPT-2: ``1 / sqrt(head_dim)`` when ``scale_attn_weights`` (else 1), divided by
    ``layer + 1`` when ``scale_attn_by_inverse_layer_idx``."""

    keys: tuple[str, ...] = ("scale_attn_weights", "scale_attn_by_inverse_layer_idx",
                             "reorder_and_upcast_attn")

    def scale(self, ctx: Ctx, g: Geometry) -> float | None:
        s = g.head_dim ** -0.5 if ctx.cfg.get("scale_attn_weights", True) else 1.0
        if ctx.cfg.get("scale_attn_by_inverse_layer_idx", False):
            s /= float(ctx.layer + 1)
        return None if s == g.head_dim ** -0.5 else s


# --------------------------------------------------------------------------- needs


@dataclass(frozen=True)
class Needs:
    """A feature the spec language does not have yet. The import fails when ``key`` (a config
    key) has a value for which ``when`` is true, or, with ``param``, when the module has that
    parameter. ``feature`` says what is missing."""

    feature: str
    key: str | None = None
    when: Callable[[Any], bool] = bool
    param: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if self.key else ()

    def check(self, ctx: Ctx) -> None:
        if self.param is not None:
            if ctx.has(self.param):
                raise ctx.error(f"parameter '{ctx.path}.{self.param}' needs {self.feature}, "
                                "not yet supported")
            return
        if self.key is not None and self.when(ctx.cfg.get(self.key)):
            raise ctx.error(f"config key '{self.key}' = {ctx.cfg.get(self.key)!r} needs "
                            f"{self.feature}, not yet supported")


# --------------------------------------------------------------------------- block features


@dataclass(frozen=True)
class QKNorm:
    """Normalisation of q and k (the ``qk_norm`` block feature): RMSNorm over each head with
    one ``[head_dim]`` weight (Qwen3; Gemma 3 and Qwen3-Next with ``offset`` 1: their ``(1 +
    w)``), over the whole projected width with one weight per feature (OLMo 2: ``scope``
    'width'), a LayerNorm over each head with a shared weight and bias (Phi: ``kind``
    'layer', parameters ``q_layernorm`` / ``k_layernorm``, ``when`` ``qk_layernorm``), or
    the weightless L2 norm after RoPE (Llama 4: ``kind`` 'l2', ``when`` ``use_qk_norm``,
    only on RoPE layers). The epsilon is the config's ``eps_key`` (``eps_default`` when
    absent, the norm class's default)."""

    kind: str = "rms"
    scope: str = "head"
    offset: float = 0.0
    after_rope: bool = False
    when: str | None = None
    eps_default: float = 1e-6
    eps_key: str = "rms_norm_eps"
    module: str = "{}_norm"  # the norm modules' names, {} being q or k

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.when,) if self.when else ()

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        if self.when is not None and not ctx.cfg.get(self.when):
            return {}, {}
        if self.after_rope and "rope" not in settings:
            return {}, {}  # Llama 4: the L2 norm only on its RoPE layers
        eps = ctx.cfg.get(self.eps_key)
        out: dict[str, Any] = {"kind": self.kind,
                               "eps": float(self.eps_default if eps is None else eps)}
        arrays: Arrays = {}
        if self.kind == "l2":
            out["weight"] = "none"
        else:
            for which, heads in (("q", g.heads), ("k", g.kv_heads)):
                name = self.module.format(which)
                shape = (heads * g.head_dim,) if self.scope == "width" else (g.head_dim,)
                for part in ("weight", "bias") if self.kind == "layer" else ("weight",):
                    a = ctx.take(f"{name}.{part}")
                    _check_shape(ctx, f"{name}.{part}", a, shape)
                    arrays[f"{which}_norm.{part}"] = a
            if self.scope == "width":
                out["scope"] = "width"
                out["weight"] = "per_head"
            if self.kind == "layer":
                out["bias"] = True
        if self.offset:
            out["offset"] = float(self.offset)
        if self.after_rope:
            out["after_rope"] = True
        return {"qk_norm": out}, arrays


@dataclass(frozen=True)
class Sinks:
    """Learned attention sinks (the ``sinks`` block feature): gpt-oss's ``sinks`` parameter,
    one logit per query head."""

    param: str = "sinks"
    keys: tuple[str, ...] = ()

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        w = ctx.take(self.param)
        _check_shape(ctx, self.param, w, (g.heads,))
        return {"sinks": "learned"}, {"sinks": w}


@dataclass(frozen=True)
class ClipQKV:
    """The projected q, k and v clamped to ``[-c, c]`` (the ``clip_qkv`` block feature):
    ``key`` is the config key of ``c`` (OLMo ``clip_qkv``, clamping when not null; MPT
    ``attn_config.clip_qkv``, clamping when truthy, so 0 is none)."""

    key: str = "clip_qkv"
    zero_is_none: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,)

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        v = ctx.cfg.get(self.key)
        if v is None or (self.zero_is_none and not v):
            return {}, {}
        return {"clip_qkv": float(ctx.cfg.number(self.key, module=ctx.path))}, {}


@dataclass(frozen=True)
class Diff:
    """Differential attention (the ``diff`` block feature, DiffLlama): the four
    ``lambda_*`` vectors, ``lambda_init`` from the layer index, the RMSNorm's ``eps`` from
    ``rms_norm_eps`` (transformers' default 1e-6 when the config has none); the ``groupnorm``
    has no weight."""

    keys: tuple[str, ...] = ()

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        arrays: Arrays = {}
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            arrays[name] = ctx.take(name)
            _check_shape(ctx, name, arrays[name], (g.head_dim,))
        if ctx.has("groupnorm.weight"):
            raise ctx.error(f"parameter '{ctx.path}.groupnorm.weight': the diff feature's "
                            "RMSNorm has no weight")
        eps = ctx.cfg.get("rms_norm_eps")
        return {"diff": {"layer": ctx.layer, "eps": float(1e-6 if eps is None else eps)}}, arrays


class _MLAProjected:
    """The arrays of a Multi-head Latent Attention module: its own projections (the ``mla``
    feature's weights, DeepSeek's names) and the output projection."""

    def __init__(self, arrays: Arrays):
        self._arrays = arrays

    def arrays(self) -> tuple[Arrays, bool, list[str]]:
        return dict(self._arrays), False, []


@dataclass(frozen=True)
class MLAProjection:
    """DeepSeek V2 / V3 Multi-head Latent Attention: ``q_proj`` or ``q_a_proj`` /
    ``q_a_layernorm`` / ``q_b_proj`` (``q_lora_rank``), ``kv_a_proj_with_mqa``,
    ``kv_a_layernorm``, ``kv_b_proj`` and ``o_proj``, placed as the ``mla`` feature's weights
    (``MLA`` gives its settings). Biases (``attention_bias``) are refused."""

    def convert(self, ctx: Ctx, g: Geometry) -> _MLAProjected:
        cfg = ctx.cfg
        if cfg.get("attention_bias"):
            raise ctx.error("config key 'attention_bias' = true: not supported with mla by "
                            "the importer")
        r = cfg.int("kv_lora_rank", module=ctx.path)
        qr = cfg.get("q_lora_rank")
        dn = cfg.int("qk_nope_head_dim", module=ctx.path)
        dr = cfg.int("qk_rope_head_dim", module=ctx.path)
        dv = cfg.int("v_head_dim", module=ctx.path)
        h = g.heads
        shapes = {"kv_a_proj_with_mqa.weight": (r + dr, g.hidden),
                  "kv_a_layernorm.weight": (r,), "kv_b_proj.weight": (h * (dn + dv), r),
                  "o_proj.weight": (g.hidden, h * dv)}
        if qr:
            shapes.update({"q_a_proj.weight": (int(qr), g.hidden),
                           "q_a_layernorm.weight": (int(qr),),
                           "q_b_proj.weight": (h * (dn + dr), int(qr))})
        else:
            shapes["q_proj.weight"] = (h * (dn + dr), g.hidden)
        out: Arrays = {}
        for name, shape in shapes.items():
            out[name] = ctx.take(name)
            _check_shape(ctx, name, out[name], shape)
        return _MLAProjected(out)


def mla_geometry(ctx: Ctx, g: Geometry) -> Geometry:
    """An MLA module's head size is ``qk_nope_head_dim + qk_rope_head_dim`` (its config's
    ``head_dim`` is the rope width), one key and value per head."""
    cfg = ctx.cfg
    hd = cfg.int("qk_nope_head_dim", module=ctx.path) + cfg.int("qk_rope_head_dim",
                                                                 module=ctx.path)
    return Geometry(g.hidden, g.heads, g.heads, hd, g.kv_width)


@dataclass(frozen=True)
class MLA:
    """The ``mla`` block feature's settings (see ``MLAProjection``): ranks, head sizes,
    ``rope_interleave`` and, with a YaRN RoPE, its ``factor`` and ``mscale_all_dim`` (the
    softmax scale's ``mscale ** 2``, DeepSeek's ``yarn_apply_mscale``)."""

    keys: tuple[str, ...] = ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim",
                             "qk_rope_head_dim", "v_head_dim", "rope_interleave", "qk_head_dim")

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        cfg = ctx.cfg
        out: dict[str, Any] = {
            "kv_lora_rank": cfg.int("kv_lora_rank", module=ctx.path),
            "q_lora_rank": int(cfg.get("q_lora_rank") or 0),
            "qk_nope_head_dim": cfg.int("qk_nope_head_dim", module=ctx.path),
            "qk_rope_head_dim": cfg.int("qk_rope_head_dim", module=ctx.path),
            "v_head_dim": cfg.int("v_head_dim", module=ctx.path),
            "rope_interleave": bool(cfg.get("rope_interleave", True))}
        p = _rope_parameters(ctx)
        if p.get("rope_type", "default") != "default" and p.get("mscale_all_dim"):
            out["factor"] = float(p["factor"])
            out["mscale_all_dim"] = float(p["mscale_all_dim"])
        return {"mla": out, "v_head_dim": out["v_head_dim"]}, {}


@dataclass(frozen=True)
class OutputGate:
    """The attention output times ``sigmoid(gate)`` before ``o_proj`` (the ``output_gate``
    block feature, Qwen3-Next): the gate rows follow each head's query rows in ``q_proj``
    (declare the projection ``Separate(gated=True)``)."""

    keys: tuple[str, ...] = ()

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        return {"output_gate": True}, {}


@dataclass(frozen=True)
class TemperatureTuning:
    """Llama 4's query temperature on its NoPE layers (the ``temperature_tuning`` block
    feature), when ``attn_temperature_tuning``: ``attn_scale`` and ``floor_scale``."""

    keys: tuple[str, ...] = ("attn_temperature_tuning", "attn_scale", "floor_scale")

    def apply(self, ctx: Ctx, g: Geometry, settings: Mapping[str, Any]) -> tuple[dict, Arrays]:
        cfg = ctx.cfg
        if not cfg.get("attn_temperature_tuning") or "rope" in settings:
            return {}, {}
        floor = cfg.get("floor_scale", 8192)
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 1:
            raise ctx.error(f"config key 'floor_scale' must be a positive integer, got {floor!r}")
        scale = cfg.get("attn_scale", 0.1)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ctx.error(f"config key 'attn_scale' must be a number, got {scale!r}")
        return {"temperature_tuning": {"attn_scale": float(scale), "floor_scale": floor}}, {}
