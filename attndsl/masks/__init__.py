"""The mask and score algebra: typed nodes, the primitive table, evaluation helpers."""
