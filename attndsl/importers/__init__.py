"""Importers: front ends that read a trained model instead of a spec text.

An importer produces plain data (the blocks of a spec, as the keyword settings of
``api.Spec.add_block``, and the weights by their contract names); ``api.import_hf`` turns it
into a ``Spec``. Importers read files with numpy only: no torch, no transformers, no onnx.
"""
