"""Deferred arrays: a parameter known by its shape and dtype whose values are made only when
they are written.

The IR passes that make new weights from old ones (``fuse-qkv`` stacks q, k and v;
``fold-scale`` scales the query rows) would otherwise hold the old and the new arrays at once,
about twice a checkpoint's bytes at the peak. They return ``Deferred`` arrays instead: a
recipe over the arrays they read. The lowering hands a parameter's array to the weight store
by reference, deferred or not, and the store makes each deferred one when it writes that
weight (to the in-memory model or the external-data file) and drops it before the next; so a
compile holds the checkpoint once plus one made weight. Everything that needs values calls
``numpy.asarray`` (``Deferred.__array__``) or ``realize``, and gets the same bytes the
eager computation gave.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np

ArrayLike = Union[np.ndarray, "Deferred"]


class Deferred:
    """An array of ``shape`` and ``dtype`` made by ``make()`` when asked for (read-only,
    never cached: each ``numpy.asarray`` makes it again, so holding a ``Deferred`` costs
    only what its recipe holds). ``what`` names the recipe in reprs and errors."""

    __slots__ = ("shape", "dtype", "_make", "what")

    def __init__(self, shape: Sequence[int], dtype: Any, make: Callable[[], np.ndarray],
                 what: str):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._make = make
        self.what = what

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def realize(self) -> np.ndarray:
        """The array, made now (C-contiguous, exactly ``shape`` and ``dtype``)."""
        out = np.ascontiguousarray(self._make())
        if out.shape != self.shape or out.dtype != self.dtype:  # a recipe bug, not input
            raise AssertionError(f"{self.what}: made {out.dtype}{list(out.shape)}, "
                                 f"declared {self.dtype}{list(self.shape)}")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Indexing makes the array (a convenience for tests and tools, not for the
        compiler's own paths, which write each deferred array whole)."""
        return self.realize()[key]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.realize()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Deferred({self.what}: {self.dtype}{list(self.shape)})"


def realize(a: ArrayLike) -> np.ndarray:
    """``a`` as a numpy array (a deferred one is made now)."""
    return a.realize() if isinstance(a, Deferred) else np.asarray(a)


def as_dtype(a: ArrayLike, dtype: Any) -> ArrayLike:
    """``a`` in ``dtype``: an array converted now (no copy when it already is), a deferred
    array converted when it is made (no work now)."""
    dtype = np.dtype(dtype)
    if not isinstance(a, Deferred):
        return np.asarray(a, dtype=dtype)
    if a.dtype == dtype:
        return a
    return Deferred(a.shape, dtype, lambda: a.realize().astype(dtype), f"{a.what} as {dtype}")


def concatenate(parts: Sequence[ArrayLike], what: str) -> Deferred:
    """``numpy.concatenate(parts, axis=0)``, made when asked for."""
    parts = tuple(parts)
    dtype = np.result_type(*(p.dtype for p in parts))
    shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])

    def make() -> np.ndarray:
        out = np.empty(shape, dtype)
        row = 0
        for p in parts:  # one part made at a time
            arr = realize(p)
            out[row:row + len(arr)] = arr
            row += len(arr)
        return out

    return Deferred(shape, dtype, make, what)


def derived(source: ArrayLike, dtype: Any, fn: Callable[[np.ndarray], np.ndarray],
            what: str) -> Deferred:
    """``fn(source)`` (same shape, ``dtype``), made when asked for."""
    return Deferred(source.shape, dtype, lambda: fn(realize(source)), what)
