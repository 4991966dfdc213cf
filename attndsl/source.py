"""Source text and spans: byte offsets -> line/column, caret rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """A spec's text and the path it came from (for messages)."""

    text: str
    path: str = "<string>"

    @classmethod
    def from_file(cls, path: str | Path) -> Source:
        p = Path(path)
        return cls(p.read_text(encoding="utf-8"), str(path))

    def line_col(self, index: int) -> tuple[int, int]:
        """The 1-based (line, column) of character ``index`` of the text."""
        line = self.text.count("\n", 0, index)
        return line + 1, index - (self.text.rfind("\n", 0, index) + 1) + 1

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A 1-based line/column position (and optional end column) in a Source."""

    source: Source = field(repr=False, compare=False)
    line: int
    col: int
    end_col: int | None = None

    def shifted(self, dcol: int, length: int | None = None) -> Span:
        """A span on the same line, moved right by ``dcol`` columns."""
        col = self.col + dcol
        return Span(self.source, self.line, col, None if length is None else col + length)

    def location(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def render(self) -> str:
        """The source line and a caret (or tilde run) under the span."""
        text = self.source.line_text(self.line).replace("\t", " ")
        if not text:
            return ""
        width = max(1, (self.end_col or self.col + 1) - self.col)
        return f"  {text}\n  {' ' * (self.col - 1)}^{'~' * (width - 1)}"
