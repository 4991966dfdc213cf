"""Decode with the KV cache and check it against full-sequence attention.

Compiles a cached spec, runs a prefill over the prompt in ONNX Runtime, then generates the
rest one position at a time, feeding each step's present_key / present_value back as the
next step's past. The outputs of all steps, joined, must equal one run over the whole
sequence (no past) — to float32 precision.

    python examples/decode_loop.py examples/mistral_block.yaml --tokens 24 --prompt-len 8
"""

from __future__ import annotations

import argparse
import sys

import attndsl
from attndsl.errors import AttnDSLError
from attndsl.inputs import random_inputs
from attndsl.lower.compile import CompileOptions, compile_model
from attndsl.runtime.decode import decode_loop, max_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="a spec (.yaml or .attn) whose blocks all have cache: true")
    parser.add_argument("--tokens", type=int, default=24, help="total sequence length")
    parser.add_argument("--prompt-len", type=int, default=8, help="positions in the prefill")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--provider", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--sparse", default="auto", choices=("auto", "dense", "block"),
                        help="block-sparse lowering strategy (as attndsl compile --sparse)")
    args = parser.parse_args(argv)
    try:
        model = attndsl.load_spec(args.spec)
        proto = compile_model(model, options=CompileOptions(sparse=args.sparse))
        # Random inputs over the whole sequence: every dynamic dim other than batch is the
        # sequence length (document ids span past + new positions, so they have it too).
        sizes = {d.name: args.tokens for d in model.dims if d.size is None}
        sizes["batch"] = args.batch
        inputs = random_inputs(model, sizes, seed=args.seed)
        run = decode_loop(model, proto, inputs, args.prompt_len, args.provider)
    except AttnDSLError as err:
        print(err, file=sys.stderr)
        return 1
    steps = len(run.spans) - (1 if args.prompt_len else 0)
    print(f"{model.name}: prefill {args.prompt_len} positions, then {steps} single-token "
          f"steps (batch {args.batch}, {args.tokens} positions in all)")
    errors = max_errors(model, run)
    for name, err in errors.items():
        print(f"  {name:24s} max abs error vs full sequence {err:.2e}")
    worst = max(errors.values())
    ok = worst <= 1e-5
    print("OK: the decode loop matches full-sequence attention" if ok
          else f"MISMATCH: {worst:.2e} > 1e-5")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
