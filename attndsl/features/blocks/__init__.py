"""Block features: one module per block setting (``rope``, ``qk_norm``, ...)."""
