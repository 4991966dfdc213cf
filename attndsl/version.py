"""The compiler's version, in a module of its own so that the layers that stamp it into
models (``lower.compile``) need not import the package root, which imports the public API."""

__version__ = "0.1.0"
