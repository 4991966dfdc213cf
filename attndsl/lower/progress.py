"""A one-line progress bar for long compiles (blocks lowered, bytes written), on stderr.

It draws only on a terminal (``stream.isatty()``) and only once the work has taken more than
``delay`` seconds, so short compiles, pipes, logs and tests print nothing. Redraws are
throttled; ``close`` erases the line, so what the command prints next starts clean. The
lowering reports finished blocks through ``scope_done`` (``GraphBuilder.scope`` calls it when a
top-level scope, a block, ends) to the ``Progress`` that ``reporting`` made current.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

_CURRENT: ContextVar[Progress | None] = ContextVar("attndsl_progress", default=None)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """Phases of known size, each drawn as ``label [####....] done/total``."""

    def __init__(self, stream: TextIO | None = None, delay: float = 2.0, width: int = 28,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self.delay, self.width, self.interval, self.clock = delay, width, interval, clock
        self.start = clock()
        self.label, self.total, self.done, self.unit = "", 0, 0, "blocks"
        self._seen: set[str] = set()
        self._last_draw = -1.0
        self._drawn = 0  # length of the line on screen (0: nothing drawn)

    @classmethod
    def silent(cls) -> Progress:
        """A progress that never draws."""
        out = cls()
        out.enabled = False
        return out

    def phase(self, label: str, total: int, unit: str = "blocks") -> None:
        """Start a phase of ``total`` units (``blocks`` or ``bytes``)."""
        self.label, self.total, self.done, self.unit = label, max(total, 0), 0, unit
        self._seen = set()
        self._draw(force=True)

    def advance(self, amount: int = 1) -> None:
        self.done = min(self.done + amount, self.total) if self.total else self.done + amount
        self._draw(force=self.done == self.total)

    def block_done(self, name: str) -> None:
        """A block's scope ended; counted once per name while a ``blocks`` phase runs."""
        if self.unit == "blocks" and name not in self._seen:
            self._seen.add(name)
            self.advance()

    def line(self) -> str:
        """The text of the bar as it stands (a phase of no known size: its label alone)."""
        elapsed = f"{self.clock() - self.start:.0f} s"
        if not self.total:
            return f"attndsl: {self.label}  {elapsed}"
        frac = self.done / self.total if self.total else 0.0
        filled = round(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        if self.unit == "bytes":
            count = f"{_size(self.done)} / {_size(self.total)}"
        else:
            count = f"{self.done}/{self.total} {self.unit}"
        return f"attndsl: {self.label} [{bar}] {count}  {elapsed}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.start < self.delay:
            return
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        text = self.line()
        pad = max(self._drawn - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """Erase the bar (if one was drawn)."""
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


@contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the one ``scope_done`` reports to; erase it at the end."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
        progress.close()


def current() -> Progress | None:
    return _CURRENT.get()


def scope_done(name: str) -> None:
    """A top-level builder scope (a block) ended: tell the current progress, if any."""
    progress = _CURRENT.get()
    if progress is not None:
        progress.block_done(name)
