"""The differential fuzzer (tools/fuzz.py) in the default suite: a small seeded batch of
mutated example specs, compiled with random options and run in ONNX Runtime against the
numpy reference, with no crash, wrong result, NaN or timeout.

``ATTNDSL_FUZZ_MUTANTS=N`` (and ``ATTNDSL_FUZZ_SEED``, ``ATTNDSL_FUZZ_JOBS``) runs a longer
batch; ``python tools/fuzz.py --mutants 100000 --jobs 2`` prints the counts of a long run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import fuzz  # noqa: E402

from attndsl import runtime  # noqa: E402

MUTANTS = int(os.environ.get("ATTNDSL_FUZZ_MUTANTS", "150"))
SEED = int(os.environ.get("ATTNDSL_FUZZ_SEED", "0"))
JOBS = int(os.environ.get("ATTNDSL_FUZZ_JOBS", "2"))


def test_fuzz_batch():
    outcomes = fuzz.run_batch(MUTANTS, seed=SEED, jobs=JOBS, timeout=120)
    s = fuzz.summarize(outcomes)
    failures = [f"{o.kind} #{o.index} {o.edits}: {o.detail}" for o in outcomes
                if o.kind in fuzz.FAILURES]
    assert not failures, "\n".join(failures[:5])
    assert s["mutants"] == MUTANTS
    assert s["ok"] >= MUTANTS // 5, s  # the mutants must not all be refused
    assert s["max_peak_mib"] < 1024, s


def test_mutants_are_deterministic_and_varied():
    a = [fuzz.make_mutant(3, i) for i in range(200)]
    b = [fuzz.make_mutant(3, i) for i in range(200)]
    assert [m.text for m in a] == [m.text for m in b]
    kinds = {e.split()[0] for m in a for e in m.edits[1:]}
    assert {"number", "mask", "score", "primitive", "flag", "delete", "duplicate",
            "chars"} <= kinds | {"insert"}
    assert {m.options["target"] for m in a} == {"portable", "ort"}


@pytest.mark.parametrize("fault", ["wrong", "nan", "crash"])
def test_the_fuzzer_sees_faults(monkeypatch, fault):
    """A fault put into the run (the children are forked, so they see the patch) is
    counted: the batch test can fail."""
    real = runtime.run_session

    def faulty(*args, **kwargs):
        outputs = real(*args, **kwargs)
        if fault == "crash":
            raise IndexError("injected")
        bump = np.nan if fault == "nan" else 1.0
        return {k: v + bump for k, v in outputs.items()}

    monkeypatch.setattr(runtime, "run_session", faulty)
    outcomes = fuzz.run_batch(6, seed=0, jobs=1)
    kinds = {o.kind for o in outcomes}
    assert fault in kinds and "ok" not in kinds
