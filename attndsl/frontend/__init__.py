"""Front ends: both syntaxes parse into one AST (``ast.SpecAST``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import AttnDSLError
from ..source import Source
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


def parse_source(source: Source) -> SpecAST:
    return parse_yaml(source) if detect_syntax(source) == "yaml" else parse_dsl(source)


def read_source(path: str | Path) -> Source:
    try:
        return Source.from_file(path)
    except FileNotFoundError:
        raise AttnDSLError(f"cannot read '{path}': no such file") from None
    except IsADirectoryError:
        raise AttnDSLError(f"cannot read '{path}': it is a directory") from None
    except UnicodeDecodeError as err:
        raise AttnDSLError(f"cannot read '{path}': not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise AttnDSLError(f"cannot read '{path}': {err.strerror}") from None
