"""The portable output runs the same in every runtime: ONNX Runtime (Python, CPU) is the
baseline; ``onnx.reference``, OpenVINO (CPU) and onnxruntime-node must agree with it.

Cases: every spec in examples/, specs/ and tests/golden/ (YAML/.attn twins with equal IR run
once), the feature specs, and inline specs for what the files may miss: every mask
primitive with dynamic lengths, every score modifier, RoPE, caches, float16, other opsets and
fully masked rows (padding length 0, an all-False mask row, a bias row of -inf, cross-attention
queries past the last key, ``none``). Each compiles with the default options and with the
block-sparse lowering forced (``sparse=block``, 4-wide tiles; skipped where the graph is the
same), and runs at two sizes of its dynamic dims (the small one: seq 1, an empty cache).

OpenVINO is skipped when not installed (it is in the ``test`` extra). It runs with
INFERENCE_PRECISION_HINT=f32: on CPUs with bf16 support its default is bf16 even for float32
models (errors ~5e-3).

onnxruntime-node: ``test_onnxruntime_node`` runs when ``node`` is on PATH and the package is
installed in ``$ATTNDSL_ORT_NODE_DIR`` (default ``~/.cache/attndsl/onnxruntime-node-VERSION``;
``.ci/run`` installs it); it never touches the network. The ``slow`` test
``test_onnxruntime_node_install`` installs it there first (npm, time-boxed). By hand::

    npm install --prefix ~/.cache/attndsl/onnxruntime-node-1.30.0 --ignore-scripts \\
        onnxruntime-node@1.30.0

Max errors per runtime are printed at the end (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from feature_specs import PAIRS

from attndsl.api import load_spec, parse_spec
from attndsl.inputs import random_inputs
from attndsl.ir.nodes import Model
from attndsl.lower.compile import CompileOptions, compile_model, model_bytes
from attndsl.runtime import make_session, run_session
from attndsl.weights import load_weights, seeded_weights

ROOT = Path(__file__).resolve().parents[1]
ATOL = {"float32": 1e-5, "float16": 4e-3}
RTOL = {"float32": 1e-5, "float16": 4e-3}
ORT_NODE_VERSION = "1.30.0"
NODE_INSTALL_TIMEOUT_S = 300
NODE_RUN_TIMEOUT_S = 300
ERRORS: dict[tuple[str, str], dict[str, float]] = {}  # (runtime, dtype) -> case -> error

Feed = dict[str, np.ndarray]


@dataclass
class Case:
    id: str
    model: Model
    weights: dict[str, np.ndarray] | None = None  # None: the spec's own (file or seeded)
    opset: int = 18
    feeds: Callable[[Model], list[Feed]] | None = None  # None: two random sizes
    check: Callable[[dict[str, np.ndarray]], None] | None = None  # more checks on outputs
    options: dict = field(default_factory=dict)  # CompileOptions fields besides the opset


# ------------------------------------------------------------ cases

def _spec_files() -> list[Path]:
    files = [p for d in ("examples", "specs")
             for p in sorted((ROOT / d).iterdir(), key=lambda p: (p.stem, p.suffix != ".yaml"))
             if p.suffix in (".yaml", ".attn")]
    return files + sorted((ROOT / "tests" / "golden").glob("*.yaml"))


def _file_cases() -> list[Case]:
    cases: list[Case] = []
    seen: list[Model] = []
    for path in _spec_files():
        model = load_spec(path)
        if model in seen:  # the .attn twin of a YAML example: same IR, same graph
            continue
        seen.append(model)
        cases.append(Case(f"{path.parent.name}/{path.name}", model))
    return cases


DYNAMIC_MASKS = """\
attndsl: 1
name: dynamic_masks
dims: {batch: dynamic, seq: dynamic, d: 32}
inputs:
  x: [batch, seq, d]
  lens: {shape: [batch], dtype: int64}
  ids: {shape: [batch, seq], dtype: int32}
  m: {shape: [batch, 1, seq, seq], dtype: bool}
blocks:
  attn:
    query: x
    heads: 4
    kv_heads: 2
    mask: "(causal & sliding(3) | window(1, 2) & ~dilated(4, 2, 1) | strided(3) & chunk(4) \
| summary(4, 1) | prefix(2) & heads(0, 2) | global(0, 3) | prefix(lens) & heads(1..3)) \
& padding(lens) & document(ids) | mask(m) & ~none & all"
outputs: {y: attn, p: attn.weights}
"""

SCORES = """\
attndsl: 1
name: scores
dims: {batch: dynamic, seq: dynamic, d: 48}
inputs:
  x: [batch, seq, d]
  t: [batch, 1, seq, seq]
blocks:
  attn:
    query: x
    heads: 6
    kv_heads: 2
    head_dim: 8
    mask: causal
    score: [bias(t), alibi, relative_bias(buckets=8, max_distance=12), softcap(3.0)]
    rope: {theta: 10000.0, dim: 6}
outputs: {y: attn, p: attn.weights}
"""

SCORES_CACHE = """\
attndsl: 1
name: scores_cache
dims: {batch: dynamic, seq: dynamic, d: 48}
inputs:
  x: [batch, seq, d]
blocks:
  attn:
    query: x
    heads: 6
    kv_heads: 3
    head_dim: 8
    bias: true
    mask: "causal & sliding(4)"
    score: [alibi, relative_bias(buckets=6, max_distance=9, bidirectional=false), softcap(3.0)]
    rope: {theta: 500000.0, interleaved: true}
    cache: true
outputs: {y: attn, p: attn.weights}
"""

SPARSE = """\
attndsl: 1
name: sparse_patterns
dims: {batch: dynamic, seq: dynamic, s: 48, d: 32}
inputs:
  x: [batch, seq, d]
  z: [batch, s, d]
  lens: {shape: [batch], dtype: int64}
blocks:
  band:
    query: x
    heads: 4
    kv_heads: 2
    mask: "window(3, 1) & padding(lens)"
    score: [alibi, softcap(5.0)]
    rope: {theta: 10000.0}
  chunks:
    query: band
    heads: 2
    mask: "causal & ~dilated(4, 2, 1)"
  band_cache:
    query: chunks
    heads: 2
    mask: sliding(3)
    cache: true
  tiles:
    query: z
    heads: 2
    mask: "window(2, 2) | global(0) | random(1, block=4, seed=2)"
    score: [relative_bias(buckets=4, max_distance=8)]
outputs: {y: band_cache, w: tiles}
"""

FULLY_MASKED = """\
attndsl: 1
name: fully_masked
dtype: DTYPE
dims: {batch: dynamic, seq: dynamic, src: dynamic, d: 32}
inputs:
  x: [batch, seq, d]
  e: [batch, src, d]
  lens: {shape: [batch], dtype: int64}
  m: {shape: [batch, 1, seq, seq], dtype: bool}
  t: [batch, 1, seq, seq]
blocks:
  self:
    query: x
    heads: 4
    kv_heads: 2
    bias: true
    mask: "padding(lens) & causal & mask(m)"
    score: [bias(t), softcap(2.0)]
    rope: {theta: 10000.0}
  cross:
    query: self
    key_value: e
    heads: 2
    mask: sliding(2)
  never:
    query: cross
    heads: 2
    bias: true
    mask: none
outputs:
  y: never
  z: cross
  self_p: self.weights
  cross_p: cross.weights
  never_p: never.weights
"""


def _no_past_feeds(model: Model) -> list[Feed]:
    return [random_inputs(model, _sizes(model, big)[0], seed=7) for big in (False, True)]


def _fully_masked_feeds(model: Model) -> list[Feed]:
    """Batch 0: padding length 0; batch 1: query 1 with an all-False mask row and query 3
    with a -inf bias row; cross-attention queries 3.. see no key (2 source positions)."""
    feed = random_inputs(model, {"batch": 2, "seq": 6, "src": 2}, seed=3)
    feed["lens"] = np.array([0, 6])
    feed["m"][:] = True
    feed["m"][1, 0, 1, :] = False
    feed["t"][1, 0, 3, :] = -np.inf
    feed["t"][1, 0, 4, 2] = -np.inf
    return [feed]


def _masked_rows(dtype: str):
    def check(out: dict[str, np.ndarray]) -> None:
        assert np.all(out["self_p"][0] == 0)
        assert np.all(out["self_p"][1, :, [1, 3]] == 0)
        assert np.all(out["self_p"][1, :, 4, 2] == 0)
        assert np.all(out["cross_p"][:, :, 3:] == 0)
        assert np.all(out["never_p"] == 0)
        assert np.abs(out["self_p"][1, :, [0, 2, 4, 5]].sum(-1) - 1).max() < ATOL[dtype]
    return check


def _inline_cases() -> list[Case]:
    cases = []
    for name, (yaml_text, _) in PAIRS.items():
        model = parse_spec(yaml_text, f"{name}.yaml")
        # all_keys has a cache but a bias over the new keys only: no past there
        feeds = _no_past_feeds if name == "all_keys" else None
        cases.append(Case(f"feature/{name}", model, seeded_weights(model), feeds=feeds))
    minimal = parse_spec(PAIRS["minimal"][0], "minimal.yaml")
    cases.append(Case("feature/minimal@opset17", minimal, opset=17))
    all_masks = parse_spec(PAIRS["all_masks"][0], "all_masks.yaml")
    cases.append(Case("feature/all_masks@opset21", all_masks, opset=21))
    cases.append(Case("inline/dynamic_masks", parse_spec(DYNAMIC_MASKS, "dm.yaml")))
    cases.append(Case("inline/scores", parse_spec(SCORES, "scores.yaml")))
    for dtype in ("float32", "float16"):
        text = SCORES_CACHE.replace("attndsl: 1", f"attndsl: 1\ndtype: {dtype}")
        cases.append(Case(f"inline/scores_cache_{dtype}", parse_spec(text, "sc.yaml")))
    for dtype in ("float32", "float16"):  # no .weights output: block-sparse plans apply
        text = SPARSE.replace("attndsl: 1", f"attndsl: 1\ndtype: {dtype}")
        cases.append(Case(f"inline/sparse_{dtype}", parse_spec(text, "sparse.yaml")))
    for dtype in ("float32", "float16"):
        model = parse_spec(FULLY_MASKED.replace("DTYPE", dtype), "fm.yaml")
        cases.append(Case(f"inline/fully_masked_{dtype}", model, feeds=_fully_masked_feeds,
                          check=_masked_rows(dtype)))
    return cases


def _compile(case: Case) -> onnx.ModelProto:
    weights = case.weights if case.weights is not None else load_weights(case.model)
    return compile_model(case.model, weights,
                         options=CompileOptions(opset=case.opset, **case.options))


# Every case compiles with the default options (what users get) and with the block-sparse
# lowering forced with 4-wide tiles, so that the small shapes here have empty, partial and
# full tiles. A variant whose graph equals the default one's skips.
STRATEGIES = {"auto": {}, "block4": {"sparse": "block", "block_size": 4}}
CASES = [replace(c, id=f"{c.id}:{name}", options=options)
         for c in _file_cases() + _inline_cases() for name, options in STRATEGIES.items()]
BY_ID = {c.id: c for c in CASES}


# ------------------------------------------------------------ compile, feed, ORT baseline

@dataclass
class Prepared:
    case: Case
    path: Path
    feeds: list[Feed]
    want: list[dict[str, np.ndarray]]  # ORT outputs per feed, by name in graph order
    graph: bytes
    same_as: str | None = None  # the default-options variant, when the graph is the same


def _sizes(model: Model, big: bool) -> tuple[dict[str, int], int]:
    """Sizes of the dynamic dims and a past length: all 1 and no past (small), or ragged."""
    dynamic = [d.name for d in model.dims if d.size is None]
    if not big:
        return {name: 1 for name in dynamic}, 0
    return {name: 2 if name == "batch" else 7 + 4 * i for i, name in enumerate(dynamic)}, 3


def _default_feeds(model: Model) -> list[Feed]:
    feeds = []
    for big in (False, True):
        sizes, past_len = _sizes(model, big)
        feeds.append(random_inputs(model, sizes, seed=7, past_len=past_len))
    return feeds


def _prepare(case: Case, root: Path) -> Prepared:
    proto = _compile(case)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["attndsl.target"] == "portable"
    path = root / ("".join(c if c.isalnum() else "_" for c in case.id) + ".onnx")
    onnx.save(proto, path)
    feeds = (case.feeds or _default_feeds)(case.model)
    session = make_session(proto, provider="cpu")
    want = [run_session(session, feed) for feed in feeds]
    for out in want:
        for name, value in out.items():
            assert np.isfinite(value).all(), f"ONNX Runtime gave non-finite {name}"
        if case.check is not None:
            case.check(out)
    return Prepared(case, path, feeds, want, model_bytes(proto))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Callable[[Case], Prepared]:
    root = tmp_path_factory.mktemp("portability")
    cache: dict[str, Prepared] = {}

    def get(case: Case) -> Prepared:
        if case.id not in cache:
            p = cache[case.id] = _prepare(case, root)
            default = BY_ID[case.id.rsplit(":", 1)[0] + ":auto"]
            if default is not case and get(default).graph == p.graph:
                p.same_as = default.id
        return cache[case.id]
    return get


def prepared_or_skip(prepared: Callable[[Case], Prepared], case: Case) -> Prepared:
    p = prepared(case)
    if p.same_as is not None:
        pytest.skip(f"the same graph as {p.same_as}")
    return p


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if ERRORS:
        print("\nmax abs error vs ONNX Runtime (Python, CPU):")
        for (runtime, dtype), errs in sorted(ERRORS.items()):
            worst = max(errs, key=errs.get)
            print(f"  {runtime:17s} {dtype:8s} {len(errs):3d} models, max {errs[worst]:.2e} "
                  f"({worst})")


def compare(runtime: str, p: Prepared, index: int, got: dict[str, np.ndarray]) -> None:
    """``got`` (outputs by name) against ORT's outputs for feed ``index``."""
    want, dtype = p.want[index], p.case.model.dtype
    assert sorted(got) == sorted(want), f"{runtime}: outputs {sorted(got)}"
    worst = 0.0
    for name, ref in want.items():
        out = np.asarray(got[name])
        assert out.dtype == ref.dtype, f"{runtime}: {name} has dtype {out.dtype}"
        assert out.shape == ref.shape, f"{runtime}: {name} has shape {out.shape}"
        assert np.isfinite(out).all(), f"{runtime}: non-finite values in {name}"
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
        bad = diff > ATOL[dtype] + RTOL[dtype] * np.abs(ref.astype(np.float64))
        assert not bad.any(), (f"{runtime}: {name} differs from ONNX Runtime by up to "
                               f"{diff.max():.3g} at {np.argwhere(bad)[0].tolist()} "
                               f"(feed {index})")
    if p.case.check is not None:
        p.case.check(got)
    errs = ERRORS.setdefault((runtime, dtype), {})
    errs[p.case.id] = max(errs.get(p.case.id, 0.0), worst)


IDS = [c.id for c in CASES]


# ------------------------------------------------------------ runtimes

def test_cases_cover_the_files_and_features():
    ids = set(IDS)
    assert {"examples/gpt2_causal.yaml:auto", "specs/bigbird.attn:block4",
            "feature/all_masks:auto", "inline/fully_masked_float16:auto",
            "inline/sparse_float16:block4"} <= ids
    assert sum(i.startswith("examples/") and i.endswith(":auto") for i in ids) >= 6
    assert any(c.model.dtype == "float16" for c in CASES)
    assert any(b.cache for c in CASES for b in c.model.blocks)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_onnx_reference(case, prepared):
    from onnx.reference import ReferenceEvaluator

    p = prepared_or_skip(prepared, case)
    evaluator = ReferenceEvaluator(str(p.path))
    names = [o.name for o in onnx.load(p.path, load_external_data=False).graph.output]
    for index, feed in enumerate(p.feeds):
        with np.errstate(invalid="ignore"):  # its Softmax of fully masked rows warns (NaN)
            values = evaluator.run(None, feed)
        compare("onnx.reference", p, index, dict(zip(names, values, strict=True)))


@pytest.fixture(scope="module")
def ov_core():
    ov = pytest.importorskip("openvino")
    return ov.Core()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_openvino(case, prepared, ov_core):
    p = prepared_or_skip(prepared, case)
    compiled = ov_core.compile_model(str(p.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.name for o in onnx.load(p.path, load_external_data=False).graph.output]
    for index, feed in enumerate(p.feeds):
        result = compiled(feed)
        got = {}
        for port in compiled.outputs:  # OpenVINO names an output port by all its tensor names
            for name in port.get_names() & set(names):
                got[name] = result[port]
        compare("openvino", p, index, got)


# ------------------------------------------------------------ onnxruntime-node

def _node_dir() -> Path:
    default = Path.home() / ".cache" / "attndsl" / f"onnxruntime-node-{ORT_NODE_VERSION}"
    return Path(os.environ.get("ATTNDSL_ORT_NODE_DIR", default))


def _installed(folder: Path) -> bool:
    return (folder / "node_modules" / "onnxruntime-node" / "package.json").exists()


def _install_ort_node(target: Path) -> None:
    """npm install onnxruntime-node into ``target`` (time-boxed; into a temporary folder that
    is renamed when complete, so a broken install never looks installed). Skips on failure."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / "package.json").write_text('{"private": true}\n')
        # --ignore-scripts: the postinstall only fetches CUDA binaries (from nuget.org); the
        # CPU binaries are in the npm package.
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
             f"onnxruntime-node@{ORT_NODE_VERSION}"], cwd=tmp, capture_output=True, text=True,
            timeout=NODE_INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.skip(f"npm install onnxruntime-node failed: {proc.stderr.strip()[-400:]}")
        try:
            tmp.rename(target)
        except OSError:  # another session installed it meanwhile
            if not _installed(target):
                raise
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install onnxruntime-node took over {NODE_INSTALL_TIMEOUT_S} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_tensor(name: str, value: np.ndarray, folder: Path) -> dict:
    value = np.ascontiguousarray(value)
    file = folder / f"{len(list(folder.iterdir()))}.bin"
    file.write_bytes(value.astype(value.dtype.newbyteorder("<")).tobytes())
    kind = "bool" if value.dtype == np.bool_ else value.dtype.name
    return {"name": name, "type": kind, "dims": list(value.shape), "file": str(file)}


_NODE_TYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
               "int64": np.int64, "int32": np.int32, "bool": np.bool_}


def _read_outputs(folder: Path) -> dict[str, np.ndarray]:
    error = folder / "error.txt"
    if error.exists():
        raise AssertionError(f"onnxruntime-node failed: {error.read_text()[:2000]}")
    out = {}
    for t in json.loads((folder / "outputs.json").read_text()):
        data = np.frombuffer(Path(t["file"]).read_bytes(), dtype=_NODE_TYPES[t["type"]])
        out[t["name"]] = data.reshape(t["dims"])
    return out


def _run_in_node(node_dir: Path, prepared: Callable[[Case], Prepared], tmp_path: Path) -> None:
    """Every case in one node process (startup paid once), compared with ORT."""
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    jobs, cases = [], [c for c in CASES if prepared(c).same_as is None]
    for case in cases:
        p = prepared(case)
        runs = []
        for index, feed in enumerate(p.feeds):
            folder = tmp_path / "in" / f"{len(jobs)}_{index}"
            folder.mkdir(parents=True)
            runs.append({"inputs": [_write_tensor(n, v, folder) for n, v in feed.items()],
                         "out": str(tmp_path / "out" / f"{len(jobs)}_{index}")})
        jobs.append({"model": str(p.path), "runs": runs})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"jobs": jobs}))
    proc = subprocess.run(
        ["node", str(ROOT / "tests" / "node_runner.mjs"), str(node_dir), str(manifest)],
        capture_output=True, text=True, timeout=NODE_RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["node"] == ORT_NODE_VERSION
    for j, case in enumerate(cases):
        p = prepared(case)
        for index in range(len(p.feeds)):
            compare("onnxruntime-node", p, index,
                    _read_outputs(tmp_path / "out" / f"{j}_{index}"))


def test_onnxruntime_node(prepared, tmp_path):
    node_dir = _node_dir()
    if not _installed(node_dir):
        pytest.skip(f"onnxruntime-node is not installed in {node_dir} (pytest -m slow "
                    "installs it; see this module's docstring)")
    _run_in_node(node_dir, prepared, tmp_path)


@pytest.mark.slow
def test_onnxruntime_node_install(prepared, tmp_path):
    """Installs onnxruntime-node when missing (network), then runs every case in it."""
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    node_dir = _node_dir()
    if not _installed(node_dir):
        _install_ort_node(node_dir)
    _run_in_node(node_dir, prepared, tmp_path)
