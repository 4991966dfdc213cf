"""Position tensors of one block, built on first use (``Range`` over ``Shape``, so dynamic
lengths work). Positions are absolute: query i is at ``past_len + i`` in self-attention,
``i`` in cross-attention; key k is its index in the key sequence (past keys first).

``Positions`` covers the whole ``[Sq, Sk]`` score matrix; ``PairPositions`` covers the cells
one piece of a block-sparse lowering computes (a query chunk against a key range, or query
tiles against the keys gathered for them). Mask and score lowerings read both through the
same attributes: ``q_col`` and ``k`` broadcast against each other to the pair shape
(``pair_rank`` axes), ``q_minus_k`` / ``k_minus_q`` are the offsets, ``index(x)`` makes
positions safe lookup indices.
"""

from __future__ import annotations

from functools import cached_property

from .builder import GraphBuilder


class Positions:
    """``q`` [Sq] / ``k`` [Sk_total] int64 positions and the pair tensors derived from them.

    ``past`` is the past length (int64 scalar) of a cached block, else None; ``x_q`` and
    ``x_k`` are the query and key streams [B, S, width]; ``same_stream`` says they are one
    tensor read in self-attention (query positions are then the new key positions).
    ``slots``: a static cache's buffer length: the keys attended over are its ``slots``
    positions (``k``), of which the first ``k_total`` are written (``past`` is then the
    write position)."""

    pair_rank = 2  # the pair axes are [Sq, Sk]
    whole = True  # every (query, key) pair in order: whole-matrix tables apply as they are
    cheap_offsets = False  # q_minus_k is as large as the pair shape

    def __init__(self, g: GraphBuilder, self_attention: bool, past: str | None, x_q: str,
                 x_k: str, same_stream: bool, slots: int | None = None):
        self.g = g
        self.slots = slots
        self.self_attention = self_attention
        self.past = past
        self.x_q = x_q
        self.x_k = x_k
        self.same_stream = same_stream and self_attention

    def _range(self, start: str | None, end: str) -> str:
        g = self.g
        return g.range(start or g.scalar(0, "int64"), end, g.scalar(1, "int64"))

    def index(self, positions: str) -> str:
        """Positions as lookup indices (all in range here)."""
        return positions

    @cached_property
    def q(self) -> str:
        """Query positions [Sq]."""
        if self.same_stream:
            return self.k_new
        sq = self.g.dim(self.x_q, 1)
        if self.past is None or not self.self_attention:
            return self._range(None, sq)
        return self._range(self.past, self.g.add(self.past, sq))

    @cached_property
    def q_first(self) -> str:
        """The position of query row 0 (int64 scalar)."""
        if self.past is None or not self.self_attention:
            return self.g.scalar(0, "int64")
        return self.past

    @cached_property
    def k_total(self) -> str:
        """The number of keys (past and new), int64 scalar."""
        sk_new = self.g.dim(self.x_k, 1)
        return sk_new if self.past is None else self.g.add(self.past, sk_new)

    @cached_property
    def k_new(self) -> str:
        """Positions of the new keys [Sk_new] (after the past ones)."""
        return self._range(self.past, self.k_total)

    @cached_property
    def k(self) -> str:
        """Positions of all keys [Sk_total] (a static cache: of all its slots)."""
        if self.slots is not None:
            return self._range(None, self.g.scalar(self.slots, "int64"))
        return self.k_new if self.past is None else self._range(None, self.k_total)

    @cached_property
    def k_row(self) -> str:
        """Key positions as a row [1, Sk_total]."""
        return self.g.unsqueeze(self.k, [0])

    @cached_property
    def q_col(self) -> str:
        """Query positions as a column [Sq, 1]."""
        return self.g.unsqueeze(self.q, [1])

    @cached_property
    def q_minus_k(self) -> str:
        """``q - k`` [Sq, Sk_total]."""
        return self.g.sub(self.q_col, self.k)

    @cached_property
    def k_minus_q(self) -> str:
        """``k - q`` [Sq, Sk_total] (relative position, T5 sign)."""
        return self.g.sub(self.k, self.q_col)


class PairPositions:
    """Positions of the cells one block-sparse piece computes.

    ``q_col`` (query positions, size 1 on the key axis) and ``k`` (key positions, size 1 on
    the query axes) have ``pair_rank`` axes and broadcast to the piece's pair shape
    (``[rows, keys]`` for a query chunk, ``[tiles, rows, keys]`` for gathered tiles).
    ``offsets``, when given, is ``q - k`` in a smaller shape that broadcasts to the same (a
    gathered band: the offsets do not depend on the tile). ``k_total`` is the number of keys
    and ``q_first`` the position of query row 0 (int64 scalars). Positions outside the
    sequences (padded query rows, gathered keys beyond either end) are clipped by ``index``;
    the caller masks them."""

    whole = False

    def __init__(self, g: GraphBuilder, q_col: str, k: str, pair_rank: int, k_total: str,
                 q_first: str, offsets: str | None = None):
        self.g = g
        self.q_col = q_col
        self.k = self.k_row = k
        self.pair_rank = pair_rank
        self.k_total = k_total
        self.q_first = q_first
        self._offsets = offsets
        self.cheap_offsets = offsets is not None

    def index(self, positions: str) -> str:
        """Positions clipped to ``[0, k_total - 1]``."""
        g = self.g
        top = g.sub(self.k_total, g.scalar(1, "int64"))
        return g.op("Clip", positions, g.scalar(0, "int64"), top)

    @cached_property
    def q_minus_k(self) -> str:
        return self._offsets if self._offsets is not None else self.g.sub(self.q_col, self.k)

    @cached_property
    def k_minus_q(self) -> str:
        return self.g.op("Neg", self.q_minus_k)
