"""Graph passes: rewrites of the lowered ONNX model (after lowering), one module per pass;
``graph_utils`` holds the helpers they share."""

from .base import GraphPass
from .fold_constants import FoldConstants
from .share_computations import ShareComputations

GRAPH_PASSES: dict[str, type[GraphPass]] = {p.name: p for p in (
    ShareComputations, FoldConstants)}

__all__ = ["GRAPH_PASSES", "FoldConstants", "GraphPass", "ShareComputations"]
