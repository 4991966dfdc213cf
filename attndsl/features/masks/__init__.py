"""Mask primitives, one module each (and ``logic``: the combinators ``&``, ``|``, ``~``)."""
