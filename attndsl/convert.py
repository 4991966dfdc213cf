"""Syntax conversion: YAML <-> ``.attn``, checked to mean the same spec."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .errors import AttnDSLError
from .fileio import write_atomic
from .frontend import parse_source, read_source
from .frontend.ast import SpecAST
from .frontend.writers import write_dsl, write_yaml
from .ir import build_ir
from .source import Source

__all__ = ["convert_file", "convert_text", "rebase_weights", "syntax_of_path"]

_SUFFIX = {"yaml": ".yaml", "dsl": ".attn"}


def syntax_of_path(path: str | Path) -> str:
    """'yaml' for .yaml / .yml, 'dsl' for .attn; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".attn":
        return "dsl"
    raise AttnDSLError(f"cannot tell the syntax of '{path}'", hint="use .yaml, .yml or .attn")


def _write(spec: SpecAST, to: str, out_path: str) -> str:
    """Spec text in syntax ``to``, checked to read back as the same AST."""
    text = (write_yaml if to == "yaml" else write_dsl)(spec)
    if parse_source(Source(text, out_path)) != spec:  # pragma: no cover - a writer bug
        raise RuntimeError(f"internal error: the {to} text of {spec.source.path} reads back "
                           "as a different spec; please report this")
    return text


def _parse_valid(source: Source, to: str) -> SpecAST:
    if to not in _SUFFIX:
        raise ValueError(f"'to' must be 'yaml' or 'dsl', not {to!r}")
    spec = parse_source(source)
    build_ir(spec)  # only valid specs are converted; this raises their errors
    return spec


def convert_text(text: str, src_path: str = "<string>", to: str = "dsl") -> str:
    """``text`` (syntax from ``src_path``'s extension, else from its content) in the syntax
    ``to`` ('yaml' or 'dsl'). The spec must be valid; the result reads back as an equal AST
    (and so an equal IR). Comments are not kept."""
    spec = _parse_valid(Source(text, str(src_path)), to)
    out = Path(str(src_path) if src_path != "<string>" else "spec").with_suffix(_SUFFIX[to])
    return _write(spec, to, str(out))


def rebase_weights(spec: SpecAST, src: Path, dst: Path) -> SpecAST:
    """``spec`` (read from ``src``) with a relative ``weights`` path rewritten to name the same
    file from ``dst``'s folder."""
    top = []
    for s in spec.top:
        if s.key == "weights" and isinstance(s.value, str) and not Path(s.value).is_absolute():
            old = src.parent / s.value
            if os.path.abspath(src.parent) != os.path.abspath(dst.parent):
                s = dataclasses.replace(s, value=os.path.relpath(old, dst.parent or "."))
        top.append(s)
    return dataclasses.replace(spec, top=tuple(top))


def convert_file(src_path: str | Path, dst_path: str | Path) -> None:
    """Convert a spec file into ``dst_path``; the syntaxes come from the extensions
    (the source's, else its content). The destination is written atomically: a temporary
    file in its folder, then ``os.replace``. A relative ``weights`` path is rewritten when
    the destination is in another folder."""
    src, dst = Path(src_path), Path(dst_path)
    to = syntax_of_path(dst)
    spec = rebase_weights(_parse_valid(read_source(src), to), src, dst)
    text = _write(spec, to, str(dst))
    write_atomic(dst, text.encode("utf-8"))
