"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``,
so readers see the old file or the new one, never a partial one, and a failure leaves the
old file untouched."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically. An existing file keeps its permissions; a new
    one gets the usual ``0666 & ~umask`` (``mkstemp`` alone would make it 0600)."""
    with open_atomic(path) as f:
        f.write(data)


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream into; when the block ends normally its content replaces
    ``path`` at once (synced first). On any exception, Ctrl-C included, the temporary file
    is removed and ``path`` is untouched. Permissions as ``write_atomic``."""
    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask()
    with _sigint_deferred():  # no Ctrl-C between creating the file and owning its name
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                   dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with _sigint_deferred():  # a second Ctrl-C must not skip the clean-up
            Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """SIGINT blocked for a few system calls (delivered, as KeyboardInterrupt, right after);
    a no-op off the main thread or where signal masks do not exist."""
    if not hasattr(signal, "pthread_sigmask") or (
            threading.current_thread() is not threading.main_thread()):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
