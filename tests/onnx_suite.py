"""The ONNX backend node tests for ``Attention`` (opsets 23-25) as an attndsl peer suite.

The onnx wheel ships the generators of its backend tests (``onnx.backend.test.case.node``), not
the data. ``attention_cases()`` runs the ``Attention`` exporters in-process (a fraction of a
second) and ``translate()`` turns each case into an attndsl core-mode spec (``project: false``)
plus the feeds it needs, or says why the spec language cannot express it (``Unexpressible``).

The harness only changes layouts, never values: 4-D ``[B, H, S, D]`` tensors become the 3-D
``[B, S, H*D]`` streams of core mode (and the output goes back), and an ``attn_mask`` shorter
than the key sequence is padded the way the operator pads it (``-inf`` / ``False``). Every
semantic attribute becomes spec text; an attribute with no spec equivalent makes the case
unexpressible. Outputs are compared as onnx's backend runner compares them (same dtype, same
shape, ``assert_allclose`` with the case's ``rtol`` / ``atol``).

``python -m tests.onnx_suite`` prints the summary table (compiled graph in ONNX Runtime).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

# ONNX Attention input / output positions (opset 23-25 schema).
IN_NAMES = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
OUT_NAMES = ("Y", "present_key", "present_value", "qk_matmul_output")
QK_SOFTMAX = 3  # qk_matmul_output_mode: post-softmax probabilities
BLOCK = "attn"
# What each ONNX output is called in the translated spec.
SPEC_OUTPUT = {"Y": "Y", "present_key": f"{BLOCK}.present_key",
               "present_value": f"{BLOCK}.present_value",
               "qk_matmul_output": "qk_matmul_output"}
SOFTMAX_PRECISION_OK = {onnx.TensorProto.FLOAT: 32, onnx.TensorProto.DOUBLE: 64}
FLOAT_BITS = {"float16": 16, "float32": 32}
TRANSLATED_ATTRS = {"q_num_heads", "kv_num_heads", "scale", "is_causal", "softcap",
                    "qk_matmul_output_mode", "softmax_precision", "left_window_size",
                    "right_window_size"}


@dataclass(frozen=True)
class Case:
    """One backend node test: the operator node, its feeds and expected outputs by ONNX name."""

    name: str
    opset: int
    node: onnx.NodeProto
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    rtol: float
    atol: float

    @property
    def attrs(self) -> dict[str, object]:
        return {a.name: helper.get_attribute_value(a) for a in self.node.attribute}


@dataclass(frozen=True)
class Translation:
    """An attndsl spec for a case, the spec's feeds, and how to read its outputs back."""

    spec: str
    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...]  # ONNX output names, in the case's order
    y_4d: tuple[int, int] | None  # (heads, v_head_dim) when Y goes back to [B, H, S, Dv]
    notes: tuple[str, ...] = ()

    def case_outputs(self, results: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The spec's outputs (by attndsl name) in the case's order and layout."""
        out = []
        for name in self.outputs:
            a = np.asarray(results[SPEC_OUTPUT[name]])
            if name == "Y" and self.y_4d is not None:
                h, dv = self.y_4d
                a = a.reshape(a.shape[0], a.shape[1], h, dv).transpose(0, 2, 1, 3)
            out.append(a)
        return out


@dataclass(frozen=True)
class Unexpressible:
    reason: str


# ------------------------------------------------------------------ case collection
def _run_exporters() -> list:
    """The ``Attention`` exporters' TestCases, generated fresh.

    The exporter module is imported the normal way (its metaclass runs the exports into onnx's
    global case list, as ``collect_testcases`` would); then every export runs again, with
    ``np.random.seed(0)`` first as the metaclass does, into a private list, so the result does
    not depend on which op another caller of ``collect_testcases`` asked for first."""
    pkg = importlib.import_module("onnx.backend.test.case.node")
    mod = importlib.import_module("onnx.backend.test.case.node.attention")
    saved = pkg._NodeTestCases, pkg._TargetOpType, pkg._existing_names
    pkg._NodeTestCases, pkg._TargetOpType, pkg._existing_names = [], "Attention", {}
    try:
        for key in vars(mod.Attention):
            if key.startswith("export"):
                np.random.seed(0)
                getattr(mod.Attention, key)()
        return list(pkg._NodeTestCases)
    finally:
        pkg._NodeTestCases, pkg._TargetOpType, pkg._existing_names = saved


_CASES: list[Case] = []


def attention_cases() -> list[Case]:
    """Every Attention node test (the ``_expanded`` function-body twins left out)."""
    if not _CASES:
        for tc in _run_exporters():
            node = tc.model.graph.node[0]
            if node.op_type != "Attention" or len(tc.model.graph.node) != 1:
                continue
            (ins, outs), = tc.data_sets
            opset = next(o.version for o in tc.model.opset_import if o.domain in ("", "ai.onnx"))
            in_names = [n for n in node.input if n]
            out_names = [n for n in node.output if n]
            _CASES.append(Case(
                tc.name, opset, node,
                dict(zip(_roles(node.input, IN_NAMES, in_names), ins, strict=True)),
                dict(zip(_roles(node.output, OUT_NAMES, out_names), outs, strict=True)),
                tc.rtol, tc.atol))
    return _CASES


def _roles(slots: Sequence[str], roles: Sequence[str], present: Sequence[str]) -> list[str]:
    """Schema role of each present input/output (the node may name them anything)."""
    by_name = {n: roles[i] for i, n in enumerate(slots) if n}
    return [by_name[n] for n in present]


# ------------------------------------------------------------------ translation
def _to_stream(x: np.ndarray) -> np.ndarray:
    """[B, H, S, D] -> [B, S, H*D]."""
    b, h, s, d = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(b, s, h * d))


def _window(left: int, right: int, causal: bool) -> str | None:
    """ONNX ``left_window_size`` / ``right_window_size`` (-1 = unbounded) as a mask term.

    Both bounds: ``window(l, r)``. One bound only, written in the mask algebra:
    ``k >= q - l`` is ``~(causal & ~window(l, 0))``; ``k <= q + r`` is
    ``~(~causal & ~window(0, r))`` (with ``causal`` set, that right bound is ``r = 0``)."""
    if left >= 0 and right >= 0:
        return f"window({left}, {right})"
    if left >= 0:
        return f"window({left}, 0)" if causal else f"~(causal & ~window({left}, 0))"
    if right >= 0:
        return None if causal else f"~(~causal & ~window(0, {right}))"
    return None


def _float(v: float) -> str:
    return repr(float(v))


def translate(case: Case, dynamic: bool = False) -> Translation | Unexpressible:
    """An attndsl core-mode spec equivalent to ``case``, or the reason there is none.

    The spec's batch / q_len / kv_len dims are the case's sizes, or ``dynamic`` ones (q_len
    stays fixed where the translation depends on it)."""
    a, x = case.attrs, case.inputs
    q, k, v = x["Q"], x["K"], x["V"]
    mode = int(a.get("qk_matmul_output_mode", 0))
    unknown = sorted(set(a) - TRANSLATED_ATTRS)
    if unknown:
        return Unexpressible(f"attribute(s) {', '.join(unknown)} not known to this translation")
    if q.dtype.name not in FLOAT_BITS:
        return Unexpressible(f"{q.dtype.name} tensors: attndsl dtypes are float32 and float16")
    if "qk_matmul_output" in case.outputs and mode != QK_SOFTMAX:
        what = {0: "raw Q·K^T", 1: "softcapped logits", 2: "logits + softcap + mask bias"}
        return Unexpressible(
            f"qk_matmul_output_mode={mode} returns {what.get(mode, 'pre-softmax values')}; "
            "attndsl exposes only the softmax probabilities (<block>.weights = mode 3)")
    notes: list[str] = []
    if "softmax_precision" in a:
        prec = int(a["softmax_precision"])
        bits = SOFTMAX_PRECISION_OK.get(prec)
        if bits is None or bits < FLOAT_BITS[q.dtype.name]:
            name = onnx.TensorProto.DataType.Name(prec)
            return Unexpressible(f"softmax_precision={name} computes softmax below the input "
                                 "precision; attndsl has no precision option")
        notes.append(f"softmax_precision={onnx.TensorProto.DataType.Name(prec)} left out: a "
                     "precision choice with no spec equivalent, held to the case's tolerance")

    # Shapes: 3-D inputs carry the head counts as attributes, 4-D ones in the shape.
    if q.ndim == 3:
        heads, kv_heads = int(a["q_num_heads"]), int(a["kv_num_heads"])
        d, dv = q.shape[2] // heads, v.shape[2] // kv_heads
        feeds = {"Q": q, "K": k, "V": v}
        y_4d = None
    else:
        heads, kv_heads, d, dv = q.shape[1], k.shape[1], q.shape[3], v.shape[3]
        feeds = {"Q": _to_stream(q), "K": _to_stream(k), "V": _to_stream(v)}
        y_4d = (heads, dv)
        notes.append("4-D Q/K/V transposed to [B, S, H*D] streams; Y transposed back")
    batch, q_len, kv_len = feeds["Q"].shape[0], feeds["Q"].shape[1], feeds["K"].shape[1]
    cache = "past_key" in x
    past = x["past_key"].shape[2] if cache else 0
    causal = bool(a.get("is_causal", 0))

    mask_terms: list[str] = []
    scores: list[str] = []
    inputs = [f"  Q: [batch, q_len, {heads * d}]", f"  K: [batch, kv_len, {kv_heads * d}]",
              f"  V: [batch, kv_len, {kv_heads * dv}]"]
    if a.get("softcap", 0.0) > 0:
        scores.append(f"softcap({_float(a['softcap'])})")
    fixed_q_len = False
    if "nonpad_kv_seqlen" in x:
        if causal and q_len != 1:
            return Unexpressible(
                "is_causal with nonpad_kv_seqlen: the causal offset is nonpad_kv_seqlen[b] - "
                "q_len per batch (a runtime value); attndsl's causal offset is past_len, one "
                "shape for the batch (only q_len = 1 reduces to padding(len))")
        if a.get("left_window_size", -1) >= 0 or a.get("right_window_size", -1) >= 0:
            return Unexpressible("window with nonpad_kv_seqlen: the window is centred at "
                                 "nonpad_kv_seqlen[b] - q_len + i, a per-batch runtime offset")
        if causal:
            causal, fixed_q_len = False, True  # q_len = 1: key j <= nonpad[b] - 1 is padding
            notes.append("is_causal + nonpad_kv_seqlen at q_len = 1 is padding(len)")
        mask_terms.append("padding(nonpad_kv_seqlen)")
        inputs.append("  nonpad_kv_seqlen: {shape: [batch], dtype: int64}")
        feeds["nonpad_kv_seqlen"] = x["nonpad_kv_seqlen"]
    if causal:
        mask_terms.insert(0, "causal")
    window = _window(int(a.get("left_window_size", -1)), int(a.get("right_window_size", -1)),
                     causal)
    if window:
        mask_terms.append(window)
    if "attn_mask" in x:
        m = x["attn_mask"]
        total = past + kv_len
        if m.shape[-1] < total:  # the operator pads the key axis with -inf / False
            pad = [(0, 0)] * (m.ndim - 1) + [(0, total - m.shape[-1])]
            m = np.pad(m, pad, constant_values=False if m.dtype == np.bool_ else -np.inf)
            notes.append(f"attn_mask key axis padded {x['attn_mask'].shape[-1]} -> {total} "
                         "as the operator pads it")
        feeds["attn_mask"] = m
        dims = ", ".join(map(str, m.shape))
        if m.dtype == np.bool_:
            mask_terms.append("mask(attn_mask)")
            inputs.append(f"  attn_mask: {{shape: [{dims}], dtype: bool}}")
        else:
            scores.append("bias(attn_mask)")
            inputs.append(f"  attn_mask: [{dims}]")
    if cache:
        feeds[f"{BLOCK}.past_key"] = x["past_key"]
        feeds[f"{BLOCK}.past_value"] = x["past_value"]

    block = [f"  {BLOCK}:", "    project: false", "    query: Q", "    key: K", "    value: V",
             f"    heads: {heads}", f"    kv_heads: {kv_heads}", f"    head_dim: {d}",
             f"    v_head_dim: {dv}"]
    if "scale" in a:
        block.append(f"    scale: {_float(a['scale'])}")
    if mask_terms:
        block.append(f"    mask: {' & '.join(mask_terms)}")
    if scores:
        block.append(f"    score: [{', '.join(scores)}]")
    if cache:
        block.append("    cache: true")
    keep = {"q_len"} if fixed_q_len else set()
    sizes = {"batch": batch, "q_len": q_len, "kv_len": kv_len}
    dims = ", ".join(f"{n}: {v if not dynamic or n in keep else 'dynamic'}"
                     for n, v in sizes.items())
    outputs = [f"  Y: {BLOCK}"]
    if "qk_matmul_output" in case.outputs:
        outputs.append(f"  qk_matmul_output: {BLOCK}.weights")
    spec = "\n".join([
        "attndsl: 1", f"name: {case.name}", f"dtype: {q.dtype.name}",
        f"dims: {{{dims}}}",
        "inputs:", *inputs, "blocks:", *block, "outputs:", *outputs, ""])
    return Translation(spec, feeds, tuple(case.outputs), y_4d, tuple(notes))


# ------------------------------------------------------------------ comparison
def compare(case: Case, got: Sequence[np.ndarray], exact_dtype: bool = True) -> None:
    """onnx's backend runner comparison: same count, shape and dtype, then ``assert_allclose``
    with the case's rtol / atol. ``exact_dtype=False`` (the float64 reference) rounds to the
    expected dtype first, as a graph of that dtype would."""
    want = list(case.outputs.values())
    assert len(got) == len(want), f"{len(got)} outputs, expected {len(want)}"
    for name, g, w in zip(case.outputs, got, want, strict=True):
        assert g.shape == w.shape, f"{name}: shape {g.shape}, expected {w.shape}"
        if exact_dtype:
            assert g.dtype == w.dtype, f"{name}: dtype {g.dtype}, expected {w.dtype}"
        else:
            g = g.astype(w.dtype)
        np.testing.assert_allclose(g, w, rtol=case.rtol, atol=case.atol, err_msg=name)


def run_reference_case(case: Case, tr: Translation) -> list[np.ndarray]:
    """The spec evaluated by attndsl's numpy reference (float64), in the case's layout."""
    from attndsl.api import parse_spec
    from attndsl.reference import run_reference

    model = parse_spec(tr.spec, f"{case.name}.yaml")
    return tr.case_outputs(run_reference(model, {}, tr.feeds))


def run_compiled_case(case: Case, tr: Translation) -> list[np.ndarray]:
    """The spec compiled by attndsl (portable target) and run in ONNX Runtime."""
    from attndsl.api import parse_spec
    from attndsl.lower.compile import compile_model
    from attndsl.runtime import make_session, run_session

    model = parse_spec(tr.spec, f"{case.name}.yaml")
    proto = compile_model(model)
    results = run_session(make_session(proto), tr.feeds)
    return tr.case_outputs(results)


# ------------------------------------------------------------------ summary
Runner = Callable[[Case, Translation], list[np.ndarray]]


def _failure(case: Case, tr: Translation, run: Runner) -> str | None:
    try:
        compare(case, run(case, tr), exact_dtype=run is not run_reference_case)
    except Exception as e:  # noqa: BLE001 - a report, not a test
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return None


def summarize(run: Runner = run_compiled_case, out=sys.stdout) -> tuple[int, int, int]:
    """Print the table (static dims, and dynamic dims unless ``run`` is the reference);
    returns (passed with static dims, expressible, total)."""
    cases = attention_cases()
    variants = (False,) if run is run_reference_case else (False, True)
    passed = dict.fromkeys(variants, 0)
    failed: list[str] = []
    unexpressible: list[str] = []
    notes: dict[str, list[str]] = {}
    expressible = 0
    for case in cases:
        label = f"{case.name} (opset {case.opset})"
        for dynamic in variants:
            tr = translate(case, dynamic=dynamic)
            if isinstance(tr, Unexpressible):
                if not dynamic:
                    unexpressible.append(f"{label}: {tr.reason}")
                break
            if not dynamic:
                expressible += 1
                for note in tr.notes:
                    notes.setdefault(note, []).append(case.name)
            why = _failure(case, tr, run)
            if why is None:
                passed[dynamic] += 1
            else:
                failed.append(f"{label}{' [dynamic dims]' if dynamic else ''}: {why}")
    what = "attndsl numpy reference" if run is run_reference_case else \
        "attndsl compile (portable) + ONNX Runtime"
    print(f"ONNX backend node tests for Attention, opsets "
          f"{min(c.opset for c in cases)}-{max(c.opset for c in cases)} (onnx "
          f"{onnx.__version__}), checked with {what}", file=out)
    print(f"  {len(cases)} cases; {expressible} expressible in attndsl, "
          f"{len(unexpressible)} not", file=out)
    for dynamic, n in passed.items():
        print(f"  passed: {n} of {expressible}{' (dynamic dims)' if dynamic else ''}", file=out)
    for title, rows in (("FAILED", failed), ("UNEXPRESSIBLE", unexpressible)):
        if rows:
            print(f"\n{title} ({len(rows)}):", *(f"  {r}" for r in rows), sep="\n", file=out)
    print("\nTRANSLATION NOTES:", file=out)
    for note, names in notes.items():
        shown = f"{len(names)} cases" if len(names) > 4 else ", ".join(names)
        print(f"  {note}: {shown}", file=out)
    return passed[False], expressible, len(cases)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "compiled"
    summarize(run_reference_case if target == "reference" else run_compiled_case)
