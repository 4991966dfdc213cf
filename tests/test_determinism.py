"""The emitted ONNX bytes do not depend on the process: every shipped spec (examples, specs,
golden specs), compiled under several option sets in three Python processes with different
``PYTHONHASHSEED`` values (so string hashing, and with it set and dict iteration order of
strings, differs), gives byte-identical models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ("0", "1", "2718")

# Runs in each child: the SHA-256 of the model bytes per "path [options]" as JSON (an error
# counts as a fingerprint too: it must be the same error in every process).
CHILD = r"""
import hashlib, json, sys
from pathlib import Path
from attndsl.api import load_spec
from attndsl.compile import CompileOptions, compile_model, model_bytes

OPTIONS = {"default": {}, "no-opt": {"passes": ()}, "block4": {"sparse": "block", "block_size": 4},
           "ort": {"target": "ort"}}
root = Path(sys.argv[1])
paths = [p for folder, patterns in (("examples", ("*.yaml", "*.attn")),
                                    ("specs", ("*.yaml", "*.attn")),
                                    ("tests/golden", ("*.yaml",)))
         for pattern in patterns for p in sorted((root / folder).glob(pattern))]
out = {}
for path in paths:
    model = load_spec(path)
    for label, options in OPTIONS.items():
        key = f"{path.relative_to(root)} [{label}]"
        try:
            data = model_bytes(compile_model(model, options=CompileOptions(**options)))
            out[key] = hashlib.sha256(data).hexdigest()
        except Exception as err:
            out[key] = f"error: {type(err).__name__}: {err}"
print(json.dumps(out, sort_keys=True))
"""


def test_same_bytes_under_different_hash_seeds() -> None:
    procs = []
    for seed in SEEDS:
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT)], env=env,
                                      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    runs = []
    for seed, proc in zip(SEEDS, procs, strict=True):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"PYTHONHASHSEED={seed}:\n{err}"
        runs.append(json.loads(out))
    first = runs[0]
    assert len(first) >= 4 * 20, sorted(first)  # every shipped spec under every option set
    assert sum(not v.startswith("error:") for v in first.values()) >= 4 * 20
    for seed, run in zip(SEEDS[1:], runs[1:], strict=True):
        differ = sorted(k for k in first.keys() | run.keys() if first.get(k) != run.get(k))
        assert not differ, f"PYTHONHASHSEED={SEEDS[0]} and {seed} differ on {differ}"
