"""Source text and spans: byte offsets -> line/column, caret rendering."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cached_property

_SHOWN = 160  # longest source line shown whole under an error; longer ones show a window
_BEFORE = 60  # characters shown before the caret in such a window


@dataclass(frozen=True)
class Source:
    """A spec's text and the path it came from (for messages)."""

    text: str
    path: str = "<string>"

    @cached_property
    def _line_starts(self) -> list[int]:
        """The index where each line begins (lines end at '\\n'), made once per Source."""
        starts = [0]
        find = self.text.find
        at = find("\n")
        while at >= 0:
            starts.append(at + 1)
            at = find("\n", at + 1)
        return starts

    def line_col(self, index: int) -> tuple[int, int]:
        """The 1-based (line, column) of character ``index`` of the text."""
        line = bisect_right(self._line_starts, index) - 1
        return line + 1, index - self._line_starts[line] + 1

    def line_text(self, line: int) -> str:
        """Line ``line`` (1-based) without its line break; '' outside the text."""
        starts = self._line_starts
        if not 0 < line <= len(starts):
            return ""
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        text = self.text[starts[line - 1]:end]
        return text[:-1] if text.endswith("\r") else text


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
        """The source line and a caret (or tilde run) under the span.

        A line longer than ``_SHOWN`` characters is shown as a window around the caret, cut
        with '...', so that an error in a megabyte-long line stays one screen line.
        """
        text = self.source.line_text(self.line).replace("\t", " ")
        if not text:
            return ""
        width = max(1, (self.end_col or self.col + 1) - self.col)
        col = self.col
        if len(text) > _SHOWN:
            start = max(0, min(col - 1 - _BEFORE, len(text) - _SHOWN))
            end = start + _SHOWN
            head = "..." if start else ""
            text = head + text[start:end] + ("..." if end < len(text) else "")
            col = col - start + len(head)
            width = max(1, min(width, end - (self.col - 1)))
        return f"  {text}\n  {' ' * (col - 1)}^{'~' * (width - 1)}"
