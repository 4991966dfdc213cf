"""The ``attndsl`` command line: argparse in front, every command a thin call into the library.

Exit codes: 0 success; 1 an internal fault or ``run --verify`` found a mismatch; 2 a bad
spec, bad input or bad usage (printed without a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__, api, limits
from .errors import AttnDSLError

PROVIDERS = ("cpu", "cuda", "auto")
ISSUES = "please report this at the attndsl issue tracker with the spec"


# ---------------------------------------------------------------- argument types


def _sizes(text: str) -> dict[str, int]:
    """``seq=128,batch=1`` -> {'seq': 128, 'batch': 1}."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        if not eq or not name.strip() or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=INT[,NAME=INT...], got '{text}'")
        out[name.strip()] = int(value)
    if not out:
        raise argparse.ArgumentTypeError("expected NAME=INT[,NAME=INT...]")
    return out


def _nonneg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return int(text)


def _positive(text: str) -> int:
    value = _nonneg(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return value


# ---------------------------------------------------------------- commands


def _compile_options(args: argparse.Namespace) -> dict:
    """The compile flags (shared by ``compile`` and ``run``) as ``api`` keyword arguments:
    ``--no-opt`` runs no passes, ``--passes a,b`` those, neither the default pipeline."""
    return {"opset": args.opset, "target": args.target, "sparse": args.sparse,
            "block_size": args.block_size, "seq_hint": args.seq_hint,
            "passes": () if args.no_opt else args.passes}


def cmd_compile(args: argparse.Namespace) -> int:
    model = api.load_spec(args.spec)
    r = api.compile_to(model, args.output, weights=args.weights or None,
                       external_data=args.external_data,
                       external_data_threshold=args.external_data_threshold, progress=True,
                       **_compile_options(args))
    data = f" + {r.data_size:,} bytes of weights in {r.data_path}" if r.data_path else ""
    print(f"wrote {args.output}: model {model.name}, {len(model.blocks)} block(s), "
          f"{len(r.proto.graph.input)} input(s), {len(r.proto.graph.output)} output(s), "
          f"{r.parameters:,} parameters, opset {args.opset}, target {args.target}, "
          f"{r.size:,} bytes{data}")
    if args.explain:
        for e in r.explanations:
            print(f"  {e.block}: {e.lowering} — {e.reason}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    model = api.load_spec(args.spec)
    summary = api.check(model, sizes=args.sizes, length=args.len, past_len=args.past_len,
                        tile_size=args.tile_size, seed=args.seed)
    print(api.format_summary(summary), end="")
    return 0


def _stats(name: str, a) -> str:
    import numpy as np

    line = f"  {name}: {a.dtype}{list(a.shape)}"
    if a.size and np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        line += f"  min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  std {f.std():.4g}"
    return line


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    # every command reads a spec with api.load_spec; a .onnx file goes to the api as it is
    target = args.model if Path(args.model).suffix.lower() == ".onnx" else api.load_spec(
        args.model)
    result = api.execute(target, args.inputs or None, sizes=args.sizes, past_len=args.past_len,
                         seed=args.seed, provider=args.provider,
                         on_note=lambda note: print(f"note: {note}", file=sys.stderr),
                         **_compile_options(args))
    print(f"ran {result.model.name} on {result.provider}:")
    for name, value in result.outputs.items():
        print(_stats(name, np.asarray(value)))
    if args.output:
        api.save_outputs(args.output, result.outputs)
        print(f"wrote {args.output}")
    return _verify(result) if args.verify else 0


def _verify(result) -> int:
    """Print every output's max abs error against the numpy reference; 1 when any is above
    the tolerance of the model's dtype (or NaN, or missing)."""
    report = api.verify(result)
    tol = report.tolerance
    print(f"verify against the numpy reference (tolerance {tol:g} max abs error, "
          f"plus {report.relative_tolerance:g} of the output's largest value):")
    for c in report.checks:
        if c.missing:
            print(f"  {c.name}: missing from the model's outputs FAIL")
        else:
            print(f"  {c.name}: max abs error {c.max_abs_error:.3g} {'ok' if c.ok else 'FAIL'}")
    if not report.passed:
        print(f"verify failed for {', '.join(report.failed)} (tolerance {tol:g})",
              file=sys.stderr)
        return 1
    return 0


def cmd_ir(args: argparse.Namespace) -> int:
    print(api.ir_text(api.load_spec(args.spec), after=args.after), end="")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    api.convert(args.src, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_import_hf(args: argparse.Namespace) -> int:
    r = api.import_hf_to(args.model_dir, args.output, module=args.module, format=args.format)
    blocks = r.spec.blocks
    print(f"wrote {r.spec_path}: {len(blocks)} block(s) ({', '.join(blocks[:4])}"
          f"{' ...' if len(blocks) > 4 else ''}) and {r.weights_path}: "
          f"{len(r.weights)} tensor(s)")
    for note in r.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    model = api.load_spec(args.spec)
    tiles = (args.tile_size or 0) if args.tiles else None
    print(api.draw(model, args.block, heads=args.heads, length=args.len,
                   past_len=args.past_len, tiles=tiles, inputs=args.inputs or None,
                   out=args.output))
    return 0


# ---------------------------------------------------------------- parser


def _compile_flags(c: argparse.ArgumentParser, when: str = "") -> None:
    c.add_argument("--opset", type=int, choices=api.OPSETS, default=api.DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset: {api.opset_ranges()} (default {api.DEFAULT_OPSET}){when}")
    c.add_argument("--target", choices=api.TARGET_NAMES, default="portable",
                   help="portable: standard ops only (default); ort: ONNX Runtime fused ops "
                   f"where a block maps exactly, portable otherwise{when}")
    c.add_argument("--sparse", choices=api.SPARSE_MODES, default="auto",
                   help="attention strategy per block: auto (cost model, default), dense, or "
                   f"block (block-sparse where the mask has empty tiles){when}")
    c.add_argument("--block-size", type=_positive, metavar="B",
                   help=f"tile size of the block-sparse lowering (default: cost model){when}")
    c.add_argument("--seq-hint", type=_positive, metavar="N",
                   help="sequence length at which --sparse auto costs dynamic dims "
                   f"(default 4096){when}")
    opt = c.add_mutually_exclusive_group()
    opt.add_argument("--passes", metavar="A,B",
                     help="optimization passes to run, in order (default: the default "
                     f"pipeline; see 'attndsl ir --after'){when}")
    opt.add_argument("--no-opt", action="store_true",
                     help=f"run no optimization passes{when}")


def _amount(text: str) -> float:
    try:
        return limits.parse_amount(text, "the limit")
    except AttnDSLError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _limit_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument("--max-weights-gib", type=_amount, metavar="G",
                   help="refuse models whose weights are over G GiB (default: "
                   "ATTNDSL_MAX_WEIGHTS_GIB, else 16 or a third of the machine's memory if "
                   "less; other limits: docs/limits.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attndsl",
        description="Compile attention specs (YAML / .attn) to ONNX, check, run and draw them.")
    p.add_argument("--version", action="version", version=f"attndsl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _parser_compile(sub)
    _parser_check(sub)
    _parser_run(sub)
    _parser_ir(sub)
    _parser_convert(sub)
    _parser_import_hf(sub)
    _parser_viz(sub)
    return p


def _parser_compile(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="compile a spec to an ONNX model",
                       description="Compile a spec to an ONNX model (written atomically).")
    c.add_argument("spec", metavar="SPEC", help="spec file (.yaml / .yml / .attn)")
    c.add_argument("-o", "--output", metavar="OUT.onnx", required=True, help="model to write")
    c.add_argument("--weights", metavar="FILE",
                   help="weights (.safetensors / .npz); default: the spec's, else seeded")
    _compile_flags(c)
    c.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="write the weights to OUT.onnx.data next to the model: auto (when the "
                   "model would exceed --external-data-threshold, default 2,000,000,000 bytes, "
                   "below protobuf's 2 GiB limit), always, or never (default auto)")
    c.add_argument("--external-data-threshold", type=_positive, metavar="BYTES",
                   help="model size above which --external-data auto writes external data")
    c.add_argument("--explain", action="store_true",
                   help="say, per block, which lowering was chosen and why")
    _limit_flags(c)
    c.set_defaults(func=cmd_compile)


def _parser_check(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("check", help="validate a spec and summarize it",
                       description="Validate a spec and print its blocks, streams, parameter "
                       "count, and per block the mask density, tile counts and FLOPs at the "
                       "given sizes (dynamic dims: --len, default 128; batch 1).")
    c.add_argument("spec", metavar="SPEC")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--len", type=_positive, metavar="N",
                   help="every dynamic dim except batch (default 128; batch is 1)")
    g.add_argument("--sizes", type=_sizes, metavar="seq=128,batch=1",
                   help="sizes of dynamic dims by name")
    c.add_argument("--past-len", type=_nonneg, default=0, metavar="N",
                   help="cached positions for blocks with a cache (default 0)")
    c.add_argument("--tile-size", type=_positive, default=64, metavar="T",
                   help="tile size for the tile counts (default 64)")
    c.add_argument("--seed", type=_nonneg, default=0, metavar="S",
                   help="seed of the example inputs that input-dependent masks read")
    _limit_flags(c)
    c.set_defaults(func=cmd_check)


def _parser_run(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("run", help="run a spec or an attndsl .onnx in ONNX Runtime",
                       description="Compile a spec (or load a .onnx made by attndsl), run it "
                       "in ONNX Runtime on given or random inputs, print the outputs; "
                       "--verify compares with the numpy reference (max abs error 1e-4 for "
                       "float32, 2e-2 for float16, plus 1e-5 / 1e-2 of the output's "
                       "largest value; exit 1 above it).")
    c.add_argument("model", metavar="SPEC|MODEL.onnx")
    c.add_argument("--inputs", metavar="in.npz", help="inputs by graph input name")
    c.add_argument("--output", metavar="out.npz", help="write the outputs here")
    c.add_argument("--provider", choices=PROVIDERS, default="cpu",
                   help="execution provider (default cpu; auto: cuda if available, else cpu)")
    c.add_argument("--verify", action="store_true", help="compare with the numpy reference")
    c.add_argument("--sizes", type=_sizes, metavar="seq=9,batch=2",
                   help="sizes of dynamic dims for random inputs (default batch 2, others 7)")
    c.add_argument("--past-len", type=_nonneg, default=0, metavar="N",
                   help="cached positions in random cache inputs (default 0)")
    c.add_argument("--seed", type=_nonneg, default=0, metavar="S", help="random input seed")
    _compile_flags(c, " (when compiling a spec)")
    _limit_flags(c)
    c.set_defaults(func=cmd_run)


def _parser_ir(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("ir", help="print the IR of a spec",
                       description="Print the checked IR of a spec (the golden-file format); "
                       "with --after PASS, the program after the default pipeline up to and "
                       "including PASS (graph passes print the ONNX graph as text).")
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--after", metavar="PASS", help="print after this pass of the default "
                   "pipeline")
    _limit_flags(c)
    c.set_defaults(func=cmd_ir)


def _parser_convert(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("convert", help="convert between YAML and .attn",
                       description="Convert a spec between YAML and .attn; the syntax of each "
                       "side is chosen by its extension.")
    c.add_argument("src", metavar="A")
    c.add_argument("-o", "--output", metavar="B", required=True)
    c.set_defaults(func=cmd_convert)


def _parser_import_hf(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("import-hf", help="import a Hugging Face checkpoint's attention",
                       description="Write the attention of a local Hugging Face checkpoint "
                       "(a save_pretrained folder: config.json and model.safetensors or its "
                       "shards; nothing is downloaded, torch and transformers are not needed) "
                       "as a spec, and its attention weights next to it as OUT with the "
                       "suffix .safetensors. Both files are written atomically.")
    c.add_argument("model_dir", metavar="MODEL_DIR")
    c.add_argument("-o", "--output", metavar="OUT.yaml", required=True,
                   help="spec to write (.yaml, or .attn)")
    c.add_argument("--module", metavar="P",
                   help="only the attention module whose parameters are P.* (e.g. "
                   "model.layers.3.self_attn): one block, input x (and kv for "
                   "cross-attention), output y; default: every attention module")
    c.add_argument("--format", choices=api.SYNTAXES,
                   help="syntax of the spec (default: by OUT's suffix, else yaml)")
    c.set_defaults(func=cmd_import_hf)


def _parser_viz(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("viz", help="draw a block's mask (text, or a PNG with -o)",
                       description="Draw a block's attention mask per head: as Unicode text "
                       "on stdout, or as a PNG with -o (needs Pillow: the 'viz' extra). With "
                       "--inputs, draw the attention probabilities of a run instead.")
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--block", metavar="B", help="block to draw (default: the first)")
    c.add_argument("--heads", metavar="0,2-3", help="heads to draw (default: all)")
    c.add_argument("--len", type=_positive, metavar="N",
                   help="query length (default: the spec's fixed length, else a small one)")
    c.add_argument("--past-len", type=_nonneg, default=0, metavar="N",
                   help="cached positions before the queries (default 0)")
    c.add_argument("--tiles", action="store_true",
                   help="classify tiles as full / partial / empty")
    c.add_argument("--tile-size", type=_positive, metavar="T",
                   help="tile size for --tiles (default: about 8 tiles across)")
    c.add_argument("--inputs", metavar="in.npz",
                   help="inputs of a run: draw its probabilities (lengths come from them)")
    c.add_argument("-o", "--output", metavar="mask.png", help="write a PNG instead of text")
    c.set_defaults(func=cmd_viz)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:  # the parser too: a Ctrl-C while it is built is an interrupt like any other
        args = build_parser().parse_args(argv)
        with limits.override(max_weights_gib=getattr(args, "max_weights_gib", None)):
            return args.func(args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except AttnDSLError as err:
        print(str(err), file=sys.stderr)
        return 2
    except OSError as err:  # unreadable or unwritable paths, full disks...
        where = f"'{err.filename}': " if err.filename else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except Exception as err:
        if os.environ.get("ATTNDSL_DEBUG") == "1":
            traceback.print_exc()
        print(f"internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(ISSUES, file=sys.stderr)
        return 1
