"""SHA-256 of the ONNX bytes of every example, spec and golden spec under a set of compile
options: a refactor that must not change the emitted models is checked by comparing two runs.

    python tools/model_hashes.py > before.json   # on the old tree
    python tools/model_hashes.py --compare before.json

The option sets cover the default pipeline, ``--no-opt``, both sparse strategies and the ort
target, so every lowering path that the examples reach is hashed."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTION_SETS: dict[str, dict] = {
    "default": {},
    "no-opt": {"passes": ()},
    "dense": {"sparse": "dense"},
    "block": {"sparse": "block", "block_size": 4},
    "ort": {"target": "ort"},
    "ort-opset24": {"target": "ort", "opset": 24},
}


def spec_paths() -> list[Path]:
    """Every spec the repository ships, in a fixed order."""
    paths = []
    for folder, patterns in (("examples", ("*.yaml", "*.attn")), ("specs", ("*.yaml", "*.attn")),
                             ("tests/golden", ("*.yaml",))):
        for pattern in patterns:
            paths.extend(sorted((ROOT / folder).glob(pattern)))
    return paths


def hashes() -> dict[str, str]:
    from attndsl.api import load_spec
    from attndsl.lower.compile import CompileOptions, compile_model, model_bytes

    out: dict[str, str] = {}
    for path in spec_paths():
        model = load_spec(path)
        for label, options in OPTION_SETS.items():
            key = f"{path.relative_to(ROOT)} [{label}]"
            try:
                proto = compile_model(model, options=CompileOptions(**options))
                out[key] = hashlib.sha256(model_bytes(proto)).hexdigest()
            except Exception as err:  # noqa: BLE001 - an error is part of the fingerprint
                out[key] = f"error: {type(err).__name__}: {err}"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="a JSON file from an earlier run")
    args = parser.parse_args()
    now = hashes()
    if not args.compare:
        json.dump(now, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    before = json.loads(Path(args.compare).read_text())
    diff = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    gone = sorted(before.keys() - now.keys())
    new = sorted(now.keys() - before.keys())
    for key in diff:
        print(f"DIFFERS {key}\n  before {before[key]}\n  now    {now[key]}")
    for key in gone:
        print(f"MISSING {key}")
    print(f"{len(before) - len(diff) - len(gone)} of {len(before)} equal, {len(diff)} differ, "
          f"{len(gone)} missing; {len(new)} new (specs added since)")
    return 1 if diff or gone else 0


if __name__ == "__main__":
    raise SystemExit(main())
