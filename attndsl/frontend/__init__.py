"""Front ends: both syntaxes parse into one AST (``ast.SpecAST``)."""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from ..errors import SpecFileError
from ..source import Source, Span
from . import limits
from .ast import SpecAST
from .dsl import parse_dsl
from .yaml_loader import parse_yaml

__all__ = ["SpecAST", "detect_syntax", "parse_dsl", "parse_source", "parse_yaml", "read_source"]


def detect_syntax(source: Source) -> str:
    """'yaml' or 'dsl', by file extension, else by the first meaningful line."""
    suffix = Path(source.path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".attn":
        return "dsl"
    for line in source.text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return "yaml" if line.startswith("attndsl:") or ":" in line.split()[0] else "dsl"
    return "yaml"


_LONE_CR = re.compile(r"\r(?!\n)")


def parse_source(source: Source) -> SpecAST:
    """Parse spec text in the syntax ``detect_syntax`` finds. A lone carriage return (old
    Mac line endings) ends a line as ``\n`` does, in both syntaxes and in error positions;
    CRLF needs nothing (the parsers and ``Source`` take it as it is)."""
    if "\r" in source.text and _LONE_CR.search(source.text):
        source = Source(_LONE_CR.sub("\n", source.text), source.path)
    return parse_yaml(source) if detect_syntax(source) == "yaml" else parse_dsl(source)


def read_source(path: str | Path, max_bytes: int | None = None) -> Source:
    """Read a spec file as UTF-8 text, refusing files over ``max_bytes`` before reading them.

    ``max_bytes`` defaults to ``ATTNDSL_MAX_SPEC_BYTES`` or 1 MiB (``limits.max_spec_bytes``).
    Never reads more than ``max_bytes + 1`` bytes, whatever the file is (``/dev/zero``, a
    pipe, a file that grows).
    """
    limit = limits.max_spec_bytes() if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise limits.too_large(str(path), size, limit)
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise SpecFileError(f"cannot read '{path}': no such file") from None
    except IsADirectoryError:
        raise SpecFileError(f"cannot read '{path}': it is a directory") from None
    except OSError as err:
        raise SpecFileError(f"cannot read '{path}': {err.strerror or err}") from None
    if len(data) > limit:
        raise limits.too_large(str(path), None, limit)
    return _decode(data, str(path))


def _decode(data: bytes, path: str) -> Source:
    """UTF-8 text (a byte-order mark dropped), or an error at the first undecodable byte."""
    try:
        return Source(data.decode("utf-8-sig"), path)
    except UnicodeDecodeError as err:
        start = err.start + (3 if data.startswith(codecs.BOM_UTF8) else 0)
        shown = Source(data.decode("utf-8-sig", errors="replace"), path)
        line, col = shown.line_col(len(data[:start].decode("utf-8-sig")))
        raise SpecFileError(
            f"cannot read '{path}': not UTF-8 text ({err.reason}: byte "
            f"{data[start]:#04x})", Span(shown, line, col),
            "save the file as UTF-8") from None
