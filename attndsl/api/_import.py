"""Importing a Hugging Face checkpoint's attention: ``import_hf`` (a ``Spec`` and its
weights) and ``import_hf_to`` (the spec file and its ``.safetensors``, as ``attndsl
import-hf`` writes them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AttnDSLError
from ..fileio import write_atomic
from ..frontend import parse_dsl, parse_yaml
from ..importers.hf import Imported, import_checkpoint
from ..safetensors_io import write_safetensors
from ..source import Source
from ..weights import check_weights
from ._spec import Spec, _syntax_name

__all__ = ["ImportReport", "import_hf", "import_hf_to"]


def _spec(imp: Imported) -> Spec:
    spec = Spec.new(imp.name, dims=imp.dims)
    for name, shape in imp.inputs.items():
        spec = spec.add_input(name, shape)
    for b in imp.blocks:
        spec = spec.add_block(b.name, **b.settings)
    for out, block in imp.outputs.items():
        spec = spec.add_output(out, block)
    return spec


def _imported(path: str | os.PathLike[str], module: str | None) -> tuple[Imported, Spec]:
    imp = import_checkpoint(path, module)
    spec = _spec(imp)
    # the importer's promise: a valid spec whose weights have exactly the contract's shapes
    check_weights(spec.model(), imp.weights, f"the weights imported from '{path}'")
    return imp, spec


def import_hf(path: str | os.PathLike[str], module: str | None = None
              ) -> tuple[Spec, dict[str, np.ndarray]]:
    """The attention of the Hugging Face checkpoint in folder ``path`` (``config.json`` and
    ``model.safetensors`` or its shards; nothing is downloaded) as a ``Spec`` and its float32
    weights by contract name (``<block>.q_proj.weight`` ...). ``module``: only the attention
    module whose parameters are ``module.*`` (e.g. ``model.layers.3.self_attn``), as one
    block with input ``x`` (and ``kv`` for cross-attention) and output ``y``; without it,
    every attention module in model order. The spec has no ``weights`` setting; pass the
    weights to ``compile`` / ``run``, or use ``import_hf_to``."""
    imp, spec = _imported(path, module)
    return spec, dict(imp.weights)


@dataclass(frozen=True)
class ImportReport:
    """What ``import_hf_to`` wrote."""

    spec: Spec
    spec_path: str
    weights_path: str
    weights: dict[str, np.ndarray] = field(repr=False)
    notes: tuple[str, ...] = ()


def _comment_blocks(text: str, syntax: str, comments: dict[str, str], header: str) -> str:
    """``text`` with a comment line before each block saying which checkpoint module it is,
    and ``header`` comment lines on top."""
    lines = text.splitlines()
    out = [f"# {h}" for h in header.splitlines()]
    in_blocks = False
    for line in lines:
        if syntax == "yaml":
            if line == "blocks:":
                in_blocks = True
            elif line and not line.startswith(" "):
                in_blocks = False
            elif in_blocks and line.startswith("  ") and not line.startswith("   "):
                name = line.strip().rstrip(":").split(":")[0]
                if name in comments:
                    out.append(f"  # {comments[name]}")
        elif line.startswith("block "):
            name = line.split()[1]
            if name in comments:
                out.append(f"# {comments[name]}")
        out.append(line)
    return "\n".join(out) + "\n"


def import_hf_to(path: str | os.PathLike[str], out: str | os.PathLike[str],
                 module: str | None = None, format: str | None = None) -> ImportReport:
    """Import as ``import_hf`` and write the spec to ``out`` (``format`` 'yaml' or 'attn';
    default by ``out``'s suffix, ``.attn`` or YAML) and the weights to ``out`` with the suffix
    ``.safetensors`` (the spec's ``weights`` names it). The spec carries comments naming the
    checkpoint module of each block. Both files are written atomically, the spec last: an
    existing ``out`` is replaced only when everything succeeded."""
    out = Path(out)
    by_suffix = {".attn": "attn", ".yaml": "yaml", ".yml": "yaml"}.get(out.suffix.lower())
    syntax = _syntax_name(format) if format else (by_suffix or "yaml")
    if by_suffix and by_suffix != syntax:
        raise AttnDSLError(f"'{out}' has the suffix of {by_suffix} but --format {syntax} "
                           "was asked for", hint=f"name it with a .{syntax} suffix")
    weights_path = out.with_suffix(".safetensors")
    if weights_path == out:
        raise AttnDSLError(f"the spec file '{out}' would be overwritten by its weights",
                           hint="give the spec a .yaml or .attn suffix")
    imp, spec = _imported(path, module)
    spec = spec.with_settings(weights=weights_path.name)
    text = spec.to_yaml() if syntax == "yaml" else spec.to_attn()
    comments = {b.name: f"checkpoint module {b.module}" for b in imp.blocks}
    header = (f"imported by attndsl import-hf from {Path(path).resolve().name} "
              f"(model_type {imp.model_type})")
    if imp.adds_residual:
        header += ("\nthe checkpoint's attention modules add their residual input to their "
                   "output;\nthese blocks compute the attention alone")
    text = _comment_blocks(text, syntax, comments, header)
    # the commented text must read back as the very same spec
    back = (parse_yaml if syntax == "yaml" else parse_dsl)(Source(text, str(out)))
    if back.errors or back != spec.ast:  # pragma: no cover - a writer bug
        raise AttnDSLError("internal error: the commented spec reads back differently; "
                           "please report this")
    write_safetensors(weights_path, imp.weights,
                      metadata={"source": "attndsl import-hf", "model_type": imp.model_type})
    write_atomic(out, text.encode("utf-8"))
    saved = Spec.load(out)
    return ImportReport(saved, str(out), str(weights_path), imp.weights, tuple(imp.notes))
