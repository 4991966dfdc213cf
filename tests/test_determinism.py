"""The emitted ONNX bytes do not depend on the process: every shipped spec (examples, specs,
golden specs), compiled under several option sets in three Python processes with different
``PYTHONHASHSEED`` values (so string hashing, and with it set and dict iteration order of
strings, differs), gives byte-identical models."""

from __future__ import annotations

from helpers import ROOT, digests_per_hash_seed

SEEDS = ("0", "1", "2718")
OPTIONS = {"default": {}, "no-opt": {"passes": []}, "block4": {"sparse": "block", "block_size": 4},
           "ort": {"target": "ort"}}


def shipped_specs() -> list[str]:
    """Every spec the repository ships, relative to its root, in a fixed order."""
    return [str(p.relative_to(ROOT))
            for folder, patterns in (("examples", ("*.yaml", "*.attn")),
                                     ("specs", ("*.yaml", "*.attn")),
                                     ("tests/golden", ("*.yaml",)))
            for pattern in patterns for p in sorted((ROOT / folder).glob(pattern))]


def test_same_bytes_under_different_hash_seeds() -> None:
    specs = shipped_specs()
    assert len(specs) >= 20
    first, *others = digests_per_hash_seed(specs, OPTIONS, SEEDS)
    assert len(first) == len(specs) * len(OPTIONS)
    errors = sorted(k for k, v in first.items() if v.startswith("error:"))
    assert not errors, errors  # every shipped spec compiles under every option set
    for seed, run in zip(SEEDS[1:], others, strict=True):
        differ = sorted(k for k in first.keys() | run.keys() if first.get(k) != run.get(k))
        assert not differ, f"PYTHONHASHSEED={SEEDS[0]} and {seed} differ on {differ}"
