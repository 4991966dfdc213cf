"""The ``attndsl`` command line: argparse in front, every command a thin call into the library.

Exit codes: 0 success; 1 an internal fault or ``run --verify`` found a mismatch; 2 a bad
spec, bad input or bad usage (printed without a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import AttnDSLError, InputError
from .lower.targets import DEFAULT_OPSET, OPSETS, opset_ranges
from .lower.targets import SPARSE_MODES as SPARSE
from .lower.targets import TARGET_NAMES as TARGETS

PROVIDERS = ("cpu", "cuda", "auto")
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
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


def _load(path: str):
    from .api import load_spec

    return load_spec(path)


def cmd_compile(args: argparse.Namespace) -> int:
    from .lower.compile import compile_with_explanations, save_model_atomic
    from .weights import load_weights

    model = _load(args.spec)
    weights = load_weights(model, args.weights) if args.weights else None
    proto, explain = compile_with_explanations(model, weights, _options(args))
    try:
        save_model_atomic(proto, args.output)
    except OSError as err:
        raise AttnDSLError(f"cannot write '{args.output}': {err.strerror or err}") from None
    size = Path(args.output).stat().st_size
    params = sum(math.prod(s) for s in model.weight_shapes().values())
    print(f"wrote {args.output}: model {model.name}, {len(model.blocks)} block(s), "
          f"{len(proto.graph.input)} input(s), {len(proto.graph.output)} output(s), "
          f"{params:,} parameters, opset {args.opset}, target {args.target}, {size:,} bytes")
    if args.explain:
        for e in explain:
            print(f"  {e.block}: {e.lowering} — {e.reason}")
    return 0


def _options(args: argparse.Namespace):
    """CompileOptions from the compile flags (shared by ``compile`` and ``run``)."""
    from .lower.compile import CompileOptions

    return CompileOptions(opset=args.opset, target=args.target, sparse=args.sparse,
                          block_size=args.block_size, seq_hint=args.seq_hint,
                          passes=_passes(args))


def _passes(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--no-opt``: no passes; ``--passes a,b``: those; neither: the default pipeline."""
    from .lower.pipeline import parse_pass_list

    if args.no_opt:
        return ()
    return None if args.passes is None else tuple(parse_pass_list(args.passes))


def cmd_check(args: argparse.Namespace) -> int:
    from .summary import format_summary, summarize

    model = _load(args.spec)
    sizes = args.sizes or {}
    if args.len is not None:
        sizes = {d.name: args.len for d in model.dims if d.size is None and d.name != "batch"}
    print(format_summary(summarize(model, sizes, past_len=args.past_len, seed=args.seed,
                                   tile=args.tile_size)), end="")
    return 0


def _model_and_proto(path: str, args: argparse.Namespace):
    """A spec compiles (with the compile flags); a ``.onnx`` made by attndsl loads and its
    spec is re-parsed."""
    if Path(path).suffix.lower() != ".onnx":
        from .lower.compile import compile_model

        model = _load(path)
        return model, compile_model(model, options=_options(args))
    from .api import parse_spec

    proto = _load_onnx(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "attndsl.spec" not in meta:
        raise InputError(f"'{path}' was not produced by attndsl (no 'attndsl.spec' metadata)")
    return parse_spec(meta["attndsl.spec"], f"{path}#attndsl.spec"), proto


def _read_inputs(path: str, expected: Sequence[str]) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except FileNotFoundError:
        raise InputError(f"cannot read inputs '{path}': no such file") from None
    except Exception as err:  # not an npz, corrupt archive...
        raise InputError(f"cannot read inputs '{path}': {err}") from None
    missing = [n for n in expected if n not in arrays]
    extra = [n for n in arrays if n not in expected]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(extra)}"] if extra else []
        raise InputError(f"inputs '{path}' do not match the model: {'; '.join(parts)}",
                         hint=f"the model's inputs are {', '.join(expected)}")
    return arrays


def _save_npz(path: str, arrays: dict) -> None:
    import numpy as np

    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, target)
    except OSError as err:
        raise AttnDSLError(f"cannot write '{path}': {err.strerror or err}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _stats(name: str, a) -> str:
    import numpy as np

    line = f"  {name}: {a.dtype}{list(a.shape)}"
    if a.size and np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        line += f"  min {f.min():.4g}  max {f.max():.4g}  mean {f.mean():.4g}  std {f.std():.4g}"
    return line


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .inputs import random_inputs
    from .runtime import make_session, run_session

    model, proto = _model_and_proto(args.model, args)
    names = [i.name for i in proto.graph.input]
    if args.inputs:
        inputs = _read_inputs(args.inputs, names)
    else:
        from .summary import check_sizes

        sizes = check_sizes(model, args.sizes or {}, default_len=7, default_batch=2)
        inputs = random_inputs(model, sizes, seed=args.seed, past_len=args.past_len)
    session = make_session(proto, provider=args.provider)
    if getattr(session, "fallback_note", None):
        print(f"note: {session.fallback_note}", file=sys.stderr)
    outputs = run_session(session, inputs)
    print(f"ran {model.name} on {session.get_providers()[0]}:")
    for name, value in outputs.items():
        print(_stats(name, np.asarray(value)))
    if args.output:
        _save_npz(args.output, outputs)
        print(f"wrote {args.output}")
    return _verify(model, proto, inputs, outputs) if args.verify else 0


def _verify(model, proto, inputs: dict, outputs: dict) -> int:
    """Max abs error of every output against the numpy reference; 1 when any is above the
    tolerance of the model's dtype (or NaN, or missing)."""
    import numpy as np

    from .lower.pipeline import model_after, parse_pass_list
    from .reference import run_reference

    # the initializers follow the IR the compile-time passes made (fused, folded...)
    meta = {p.key: p.value for p in proto.metadata_props}
    model = model_after(model, parse_pass_list(meta.get("attndsl.passes", "")))
    expected = run_reference(model, _initializers(proto, model), inputs)
    tol = TOLERANCE[model.dtype]
    failed = []
    print(f"verify against the numpy reference (tolerance {tol:g} max abs error):")
    for name, want in expected.items():
        if name not in outputs:
            failed.append(name)
            print(f"  {name}: missing from the model's outputs FAIL")
            continue
        got = np.asarray(outputs[name], np.float64)
        err = float(np.max(np.abs(got - want))) if want.size else 0.0
        ok = got.shape == want.shape and err <= tol  # NaN is never <= tol
        if not ok:
            failed.append(name)
        print(f"  {name}: max abs error {err:.3g} {'ok' if ok else 'FAIL'}")
    if failed:
        print(f"verify failed for {', '.join(failed)} (tolerance {tol:g})", file=sys.stderr)
        return 1
    return 0


def _load_onnx(path: str):
    import onnx

    try:
        return onnx.load(path)
    except FileNotFoundError:
        raise InputError(f"cannot read '{path}': no such file") from None
    except Exception as err:  # protobuf decode errors and the like
        raise InputError(f"cannot read '{path}' as an ONNX model: {err}") from None


def _initializers(proto, model) -> dict:
    """The weights the model really holds (its initializers are named as the weights)."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    missing = [n for n in model.weight_shapes() if n not in arrays]
    if missing:
        raise InputError(f"the model lacks the weights {', '.join(missing)}")
    return {name: arrays[name] for name in model.weight_shapes()}


def cmd_ir(args: argparse.Namespace) -> int:
    from .ir import print_ir

    model = _load(args.spec)
    if args.after is None:
        print(print_ir(model), end="")
        return 0
    from .lower.pipeline import ir_after
    from .weights import load_weights

    print(ir_after(model, load_weights(model), args.after), end="")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_file

    convert_file(args.src, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from .viz import draw

    model = _load(args.spec)
    inputs = None
    if args.inputs:
        from .summary import graph_input_names

        inputs = _read_inputs(args.inputs, graph_input_names(model))
    tiles = (args.tile_size or 0) if args.tiles else None
    print(draw(model, args.block, heads=args.heads, length=args.len, past_len=args.past_len,
               tiles=tiles, inputs=inputs, out=args.output))
    return 0


# ---------------------------------------------------------------- parser


def _compile_flags(c: argparse.ArgumentParser, when: str = "") -> None:
    c.add_argument("--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset: {opset_ranges()} (default {DEFAULT_OPSET}){when}")
    c.add_argument("--target", choices=TARGETS, default="portable",
                   help="portable: standard ops only (default); ort: ONNX Runtime fused ops "
                   f"where a block maps exactly, portable otherwise{when}")
    c.add_argument("--sparse", choices=SPARSE, default="auto",
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attndsl",
        description="Compile attention specs (YAML / .attn) to ONNX, check, run and draw them.")
    p.add_argument("--version", action="version", version=f"attndsl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("compile", help="compile a spec to an ONNX model",
                       description="Compile a spec to an ONNX model (written atomically).")
    c.add_argument("spec", metavar="SPEC", help="spec file (.yaml / .yml / .attn)")
    c.add_argument("-o", "--output", metavar="OUT.onnx", required=True, help="model to write")
    c.add_argument("--weights", metavar="FILE",
                   help="weights (.safetensors / .npz); default: the spec's, else seeded")
    _compile_flags(c)
    c.add_argument("--explain", action="store_true",
                   help="say, per block, which lowering was chosen and why")
    c.set_defaults(func=cmd_compile)

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
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("run", help="run a spec or an attndsl .onnx in ONNX Runtime",
                       description="Compile a spec (or load a .onnx made by attndsl), run it "
                       "in ONNX Runtime on given or random inputs, print the outputs; "
                       "--verify compares with the numpy reference (max abs error 1e-4 for "
                       "float32, 2e-2 for float16; exit 1 above it).")
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
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("ir", help="print the IR of a spec",
                       description="Print the checked IR of a spec (the golden-file format); "
                       "with --after PASS, the program after the default pipeline up to and "
                       "including PASS (graph passes print the ONNX graph as text).")
    c.add_argument("spec", metavar="SPEC")
    c.add_argument("--after", metavar="PASS", help="print after this pass of the default "
                   "pipeline")
    c.set_defaults(func=cmd_ir)

    c = sub.add_parser("convert", help="convert between YAML and .attn",
                       description="Convert a spec between YAML and .attn; the syntax of each "
                       "side is chosen by its extension.")
    c.add_argument("src", metavar="A")
    c.add_argument("-o", "--output", metavar="B", required=True)
    c.set_defaults(func=cmd_convert)

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
