"""Position tensors of one block, built on first use (``Range`` over ``Shape``, so dynamic
lengths work). Positions are absolute: query i is at ``past_len + i`` in self-attention,
``i`` in cross-attention; key k is its index in the key sequence (past keys first)."""

from __future__ import annotations

from functools import cached_property

from .builder import GraphBuilder


class Positions:
    """``q`` [Sq] / ``k`` [Sk_total] int64 positions and the pair tensors derived from them.

    ``past`` is the past length (int64 scalar) of a cached block, else None; ``x_q`` and
    ``x_k`` are the query and key streams [B, S, width]; ``same_stream`` says they are one
    tensor read in self-attention (query positions are then the new key positions)."""

    def __init__(self, g: GraphBuilder, self_attention: bool, past: str | None, x_q: str,
                 x_k: str, same_stream: bool):
        self.g = g
        self.self_attention = self_attention
        self.past = past
        self.x_q = x_q
        self.x_k = x_k
        self.same_stream = same_stream and self_attention

    def _range(self, start: str | None, end: str) -> str:
        g = self.g
        return g.range(start or g.scalar(0, "int64"), end, g.scalar(1, "int64"))

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
        """Positions of all keys [Sk_total]."""
        return self.k_new if self.past is None else self._range(None, self.k_total)

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
