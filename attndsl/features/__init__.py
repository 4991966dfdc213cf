"""Attention features, one module each: mask primitives (``features/masks``) and score
modifiers (``features/scores``), found by ``features.registry``; see docs/architecture.md."""
