"""Engines over mask expressions: numpy evaluation, the rewrite algebra and tile analysis.
The primitives themselves (nodes, parameters, rules) are the modules of ``features``."""
