"""Every node class of the mask and score features, for callers and tests
(``from attndsl.features import nodes as mn``)."""

from __future__ import annotations

from .base import And, Mask, Not, Or, Score, children, input_names, walk, with_children
from .masks.all import All
from .masks.causal import Causal
from .masks.chunk import Chunk
from .masks.dilated import Dilated
from .masks.document import Document
from .masks.global_ import Global
from .masks.heads import Heads
from .masks.mask_input import MaskInput
from .masks.none import Never
from .masks.padding import Padding
from .masks.prefix import Prefix
from .masks.random import Random
from .masks.sliding import Sliding
from .masks.strided import Strided
from .masks.summary import Summary
from .masks.window import Window
from .scores.alibi import Alibi
from .scores.bias import BiasInput
from .scores.relative_bias import RelativeBias
from .scores.softcap import Softcap

__all__ = ["Alibi", "All", "And", "BiasInput", "Causal", "Chunk", "Dilated", "Document",
           "Global", "Heads", "Mask", "MaskInput", "Never", "Not", "Or", "Padding", "Prefix",
           "Random", "RelativeBias", "Score", "Sliding", "Softcap", "Strided", "Summary",
           "Window", "children", "input_names", "walk", "with_children"]
