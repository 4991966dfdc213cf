"""``attndsl import-hf``: the attention of a Hugging Face checkpoint (a folder written by
``save_pretrained``: ``config.json`` and safetensors weights) as spec blocks and weights.

Nothing is downloaded, and neither torch nor transformers is needed: ``config.json`` is read
as JSON and the weights with ``safetensors_io``. The architecture of ``model_type`` is looked
up in ``architectures.ARCHITECTURES`` (a declaration composing the parts of ``parts.py``);
each attention module is imported part by part, every parameter of the module must be placed
and every config key must be in a table (``config.py``), else the import fails naming it.

The result (``Imported``) is plain data: dims, inputs, blocks as the keyword settings of
``api.Spec.add_block``, outputs and weights; ``api.import_hf`` makes it a ``Spec``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import did_you_mean
from ...safetensors_io import open_checkpoint
from .architectures import ARCHITECTURES, PENDING, SUPPORTED, Architecture, Stack
from .config import COMMON_HARMLESS, Config, HFImportError, classify_keys, read_config
from .parts import Ctx

__all__ = ["ARCHITECTURES", "PENDING", "SUPPORTED", "HFImportError", "Imported",
           "ImportedBlock", "Module", "import_checkpoint"]


@dataclass(frozen=True)
class Module:
    """One attention module of the checkpoint."""

    stack: Stack
    layer: int
    path: str          # the checkpoint prefix of its parameters
    block: str         # the block name it becomes
    layer_type: str | None


@dataclass(frozen=True)
class ImportedBlock:
    """One block: ``settings`` are ``Spec.add_block`` keyword arguments."""

    name: str
    module: str
    settings: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass
class Imported:
    """What an import produces (see the module docstring)."""

    name: str
    model_type: str
    dims: dict[str, int | str]
    inputs: dict[str, list[int | str]]
    blocks: list[ImportedBlock]
    outputs: dict[str, str]
    weights: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    adds_residual: bool = False


def _architecture(cfg: Config) -> Architecture:
    mt = cfg.model_type
    arch = ARCHITECTURES.get(mt)
    if arch is None:
        raise HFImportError(
            f"{cfg.where()}model_type '{mt}' is not supported by the importer",
            hint=(did_you_mean(mt, ARCHITECTURES) or "")
            + ("; " if did_you_mean(mt, ARCHITECTURES) else "")
            + f"supported: {', '.join(SUPPORTED)}"
            + (f"; declared but waiting for features: {', '.join(PENDING)}" if PENDING else ""))
    return arch


def _layer_count(cfg: Config, stack: Stack) -> int:
    key = stack.count if cfg.get(stack.count) is not None or not stack.count_default \
        else stack.count_default
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise HFImportError(f"{cfg.where()}config key '{key}' must be a layer count, got {v!r}")
    return v


def _root(arch: Architecture, names: list[str], cfg: Config) -> str:
    """The prefix of the model's modules in the checkpoint (``model.``, ``transformer.``,
    or none), found from the first module matching a stack's template."""
    for stack in arch.stacks:  # any layer: Qwen3-Next's first layers are not attention
        pattern = re.compile(r"(?:^|(?<=\.))" + re.escape(stack.template).replace(
            re.escape("{i}"), r"\d+") + r"\.")
        for n in names:
            found = pattern.search(n)
            if found:
                return n[:found.start()]
    raise HFImportError(
        f"{cfg.where()}no attention module '{arch.stacks[0].template.format(i=0)}' among "
        f"the checkpoint's parameters (model_type '{arch.model_type}')",
        hint="was the checkpoint written by this architecture's model class?")


def modules(arch: Architecture, cfg: Config, names: list[str]) -> list[Module]:
    """Every attention module of the checkpoint, in model order."""
    root = _root(arch, names, cfg)
    found: list[tuple[tuple[int, int, int], Module]] = []
    enc_dec = any(s.encoder for s in arch.stacks)
    for stack in arch.stacks:
        n = _layer_count(cfg, stack)
        held = re.compile(re.escape(root + stack.template).replace(re.escape("{i}"), r"\d+")
                          + r"\.")
        if not any(held.match(n) for n in names):
            continue  # a stack this checkpoint does not hold (T5EncoderModel has no decoder)
        for i in range(n):
            path = root + stack.template.format(i=i)
            lt = stack.mask.layer_type(cfg, i, n, path)
            if lt == "linear_attention":
                continue  # not attention: named in an error when asked for by --module
            name = f"{stack.name}{i}" if enc_dec else f"layer{i}"
            found.append(((stack.order[0], i, stack.order[1]),
                          Module(stack, i, path, name, lt)))
    return [m for _, m in sorted(found, key=lambda t: t[0])]


def _params(names: list[str], path: str) -> set[str]:
    pre = path + "."
    return {n[len(pre):] for n in names if n.startswith(pre)}


def _import_module(arch: Architecture, cfg: Config, m: Module, ckpt: Any, names: list[str],
                   first: dict[str, str]) -> tuple[dict[str, Any], dict[str, np.ndarray],
                                                   list[str]]:
    """The block settings, weights (names relative to the block) and notes of module ``m``."""
    ctx = Ctx(cfg, m.path, m.layer, m.layer_type, ckpt.read, _params(names, m.path))
    if not ctx.params:
        raise ctx.error("the checkpoint has no parameters for this module")
    g = arch.geometry(m.stack, ctx)
    proj = arch.projection_for(ctx).convert(ctx, g)
    arrays, bias, notes = proj.arrays()
    settings: dict[str, Any] = {"heads": g.heads}
    if g.kv_heads != g.heads:
        settings["kv_heads"] = g.kv_heads
    if g.heads * g.head_dim != g.hidden:
        settings["head_dim"] = g.head_dim
    if bias:
        settings["bias"] = bias
    scale = arch.scale.scale(ctx, g)
    if scale is not None:
        settings["scale"] = float(scale)
    mask = m.stack.mask.expr(ctx)
    if mask is not None:
        settings["mask"] = mask
    scores = []
    refs = {"first": first[m.stack.name], "stack": "encoder" if m.stack.encoder else "decoder"}
    for part in m.stack.scores:
        text, extra = part.modifier(ctx, g, refs)
        if text:
            scores.append(text)
            arrays.update(extra)
    if scores:
        settings["score"] = scores
    if m.stack.rope is not None:
        rope = m.stack.rope.settings(ctx, g)
        if rope is not None:
            settings["rope"] = rope
    for part in arch.features:
        extra, extra_arrays = part.apply(ctx, g, settings)
        for key, value in extra.items():  # block features go in add_block's ``features``
            if key in _CORE_SETTINGS:
                settings[key] = value
            else:
                settings.setdefault("features", {})[key] = value
        arrays.update(extra_arrays)
    left = sorted(ctx.params - ctx.taken)
    if left:
        raise ctx.error(f"parameter '{m.path}.{left[0]}' cannot be placed in the spec",
                        hint="the spec language has no place for it; refusing rather than "
                        "computing something else")
    return settings, arrays, notes


# add_block settings a feature part may give besides block features (MLA's v_head_dim)
_CORE_SETTINGS = frozenset({"v_head_dim"})


def _name(text: str) -> str:
    out = re.sub(r"\W", "_", text)
    return out if out and not out[0].isdigit() else f"m_{out}"


def import_checkpoint(model_dir: str | Path, module: str | None = None) -> Imported:
    """Import the attention of the checkpoint in ``model_dir``: every attention module in
    model order, or only the one whose parameters are ``module.*``."""
    cfg = read_config(model_dir)
    arch = _architecture(cfg)
    with open_checkpoint(model_dir) as ckpt:
        names = ckpt.names()
        mods = modules(arch, cfg, names)
        if not mods:
            raise HFImportError(f"{cfg.where()}the checkpoint has no attention modules")
        first: dict[str, str] = {}  # each stack's first module (T5 shares its bias table)
        for m in mods:  # in model order, so layer by layer
            first.setdefault(m.stack.name, m.path)
        if module is not None:
            chosen = [m for m in mods if m.path == module]
            if not chosen:
                linear = _params(names, module) and "linear" in module
                raise HFImportError(
                    f"{cfg.where()}no attention module '{module}' in the checkpoint"
                    + (": it is a linear-attention layer, which is not softmax attention"
                       if linear else ""),
                    hint=did_you_mean(module, [m.path for m in mods])
                    or f"its attention modules: {', '.join(m.path for m in mods[:6])}"
                    + (" ..." if len(mods) > 6 else ""))
            mods = chosen
        for m in mods:  # features the language lacks: say so before anything else
            ctx = Ctx(cfg, m.path, m.layer, m.layer_type, ckpt.read, _params(names, m.path))
            for need in arch.needs:
                need.check(ctx)
        notes = classify_keys(cfg, arch.keys, arch.harmless | _nested_common(cfg),
                              arch.model_type)
        out = _assemble(arch, cfg, mods, ckpt, names, first, module, Path(model_dir))
    out.notes[:0] = notes
    return out


def _nested_common(cfg: Config) -> frozenset[str]:
    """Nested sections repeat transformers' common config keys (MPT's ``attn_config``)."""
    return frozenset(k for k in cfg.flat if "." in k and k.split(".", 1)[1] in COMMON_HARMLESS)


def _assemble(arch: Architecture, cfg: Config, mods: list[Module], ckpt: Any,
              names: list[str], first: dict[str, str], module: str | None,
              model_dir: Path) -> Imported:
    if arch.check_keys is not None:
        arch.check_keys(Ctx(cfg, mods[0].path, 0, None, ckpt.read, set()))
    single = module is not None
    enc_dec = any(s.encoder for s in arch.stacks)
    hidden = None
    dims: dict[str, int | str] = {"batch": "dynamic"}
    inputs: dict[str, list[int | str]] = {}
    outputs: dict[str, str] = {}
    blocks: list[ImportedBlock] = []
    weights: dict[str, np.ndarray] = {}
    by_note: dict[str, list[str]] = {}  # the same note for many blocks is said once
    for m in mods:
        settings, arrays, bnotes = _import_module(arch, cfg, m, ckpt, names, first)
        width = arrays["o_proj.weight"].shape[0]
        kv_width = arrays["k_proj.weight"].shape[1] if "k_proj.weight" in arrays else width
        if hidden is None:
            hidden = width
        if width != hidden or kv_width != hidden:
            raise HFImportError(f"{cfg.where(m.path)}its width {width} differs from the "
                                f"first module's {hidden}")
        if single:
            seq = "seq"
            q_in, kv_in, out = "x", "kv", "y"
        else:
            seq = ("src" if m.stack.encoder else "tgt") if enc_dec else "seq"
            q_in, kv_in, out = f"{m.block}_x", "encoder_states", f"{m.block}_y"
        dims.setdefault(seq, "dynamic")
        inputs[q_in] = ["batch", seq, "hidden"]
        streams: dict[str, Any] = {"query": q_in}
        if m.stack.cross:
            kv_seq = "kv_seq" if single else "src"
            dims.setdefault(kv_seq, "dynamic")
            inputs[kv_in] = ["batch", kv_seq, "hidden"]
            streams["key_value"] = kv_in
        settings = {**streams, **settings}
        blocks.append(ImportedBlock(m.block, m.path, settings, tuple(bnotes)))
        outputs[out] = m.block
        for k, a in arrays.items():
            weights[f"{m.block}.{k}"] = np.ascontiguousarray(a, np.float32)
        for n in bnotes:
            by_note.setdefault(n, []).append(m.block)
    notes = [f"{', '.join(bs[:3])}{f' and {len(bs) - 3} more' if len(bs) > 3 else ''}: {n}"
             for n, bs in by_note.items()]
    dims["hidden"] = int(hidden)
    if single:
        name = _name(f"{arch.model_type}_{mods[0].block}")
    else:
        name = _name(f"{arch.model_type}_{model_dir.resolve().name}")
    if arch.module_adds_residual:
        notes.append("the checkpoint's attention module adds the residual it is given to its "
                     "output; the spec's output is the attention alone (add the residual "
                     "outside)")
    return Imported(name, arch.model_type, dims, inputs, blocks, outputs, weights, notes,
                    arch.module_adds_residual)
