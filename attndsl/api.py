"""The library entry points the CLI and tests call."""

from __future__ import annotations

from pathlib import Path

from .frontend import parse_source, read_source
from .ir import Model, build_ir
from .source import Source


def load_spec(path: str | Path) -> Model:
    """Read, parse and check a spec file (YAML or ``.attn``) into IR."""
    return build_ir(parse_source(read_source(path)))


def parse_spec(text: str, path: str = "<string>") -> Model:
    """Parse and check spec text; ``path`` picks the syntax by extension (else by content)."""
    return build_ir(parse_source(Source(text, path)))
