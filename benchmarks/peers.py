"""The runners: attndsl (per target / strategy) and the peers, each prepared on a case.

A runner's ``prepare(case, inputs, settings)`` does everything that is not timed (compile,
export, session creation, BlockMask creation, torch.compile's first call) and returns a
``Prepared`` whose ``call()`` is one timed inference on the shared inputs and whose
``output(result)`` gives the attention output as packed float32 [B, Sq, H*D] for the
cross-check (``None`` for the memcpy probes, which compute no attention). ``Skip`` says why
a runner does not apply to a case.

The loop case (``Case.pattern == "loop"``) is run by two runners: attndsl (each variant, through
``attndsl.runtime.decode.decode_steps``) and ``ort-gqa`` (the same prefill + steps loop on a
GroupQueryAttention model with its fused rotary embedding); one call is the whole loop.

Every ONNX model runs in the same kind of ONNX Runtime session (CPU, ``intra_op_num_threads``
from the settings, one inter-op thread, default graph optimizations).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cases import Case
from .variants import Variant, _line, compile_variant, model_digest


class Skip(Exception):
    """The runner does not apply to (or cannot run) this case; the message says why."""


@dataclass
class Settings:
    threads: int = 2
    compile_flex: bool = True  # False: eager flex_attention (dry runs)
    dynamic: bool = False  # attndsl specs with a symbolic sequence dim


@dataclass
class Prepared:
    call: Callable[[], Any]
    output: Callable[[Any], np.ndarray]
    setup_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Runner:
    name: str
    # attndsl | torch | ort (ORT's fused ops) | export (torch.onnx.export + ORT) |
    # probe (a memory-bandwidth yardstick: copies the KV cache, computes no attention)
    family: str
    what: str  # one line for the README / report
    prepare: Callable[[Case, dict[str, np.ndarray], Settings], Prepared]
    applies: Callable[[Case], str | None] = lambda case: None  # None, or why it does not
    quadratic: Callable[[Case], bool] = lambda case: case.pattern != "decode"
    variant: Variant | None = None  # attndsl runners: how they compile


# ------------------------------------------------------------------ ONNX Runtime
def ort_session(model: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _ort_prepared(model: bytes, feed: dict[str, np.ndarray], settings: Settings,
                  start: float, outputs: list[str] | None = None, **info: Any) -> Prepared:
    session = ort_session(model, settings.threads)
    names = outputs or [o.name for o in session.get_outputs()]
    return Prepared(call=lambda: session.run(names, feed), output=lambda r: r[0],
                    setup_s=time.perf_counter() - start,
                    info={"model_mb": round(len(model) / 2**20, 2), **info})


def attndsl_runner(variant: Variant) -> Runner:
    def prepare(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
        start = time.perf_counter()
        proto, explain = compile_variant(variant, case.spec_text(settings.dynamic),
                                         case.seq if settings.dynamic else None)
        data = proto.SerializeToString(deterministic=True)
        compile_s = time.perf_counter() - start
        info = {"compile_s": compile_s, "sha": model_digest(proto), "explain": explain}
        if case.pattern == "loop":
            return _attndsl_loop(case, data, inputs, settings, start, info)
        return _ort_prepared(data, inputs, settings, start, outputs=None, **info)

    def quadratic(case: Case) -> bool:
        return case.pattern != "decode" and variant.sparse in (None, "dense")

    return Runner(f"attndsl {variant.label}", "attndsl", variant.what, prepare,
                  quadratic=quadratic, variant=variant)


def _attndsl_loop(case: Case, model: bytes, inputs: dict[str, np.ndarray], settings: Settings,
                  start: float, info: dict[str, Any]) -> Prepared:
    """The generation loop through attndsl's decode helper (``decode_steps``: prefill over the
    prompt, then one position per step, present K/V fed back as past) on the harness's kind
    of session."""
    from attndsl.api import parse_spec
    from attndsl.runtime.decode import decode_steps

    spec = parse_spec(case.spec_text(), "bench.yaml")
    session = ort_session(model, settings.threads)

    def call():
        steps, _ = decode_steps(spec, session, inputs, case.seq, keep_caches=False)
        return steps

    def output(steps) -> np.ndarray:
        return np.concatenate([s["y"] for s in steps], axis=1)

    return Prepared(call, output, time.perf_counter() - start,
                    {"model_mb": round(len(model) / 2**20, 2), **info})


def static_spec_text(case: Case) -> str:
    """The decode case's spec with a static KV cache of ``past + 1`` slots (the step's token
    is written at slot ``past``)."""
    return case.spec_text().replace(
        "    cache: true", f"    cache: {{layout: static, max_len: {case.seq + 1}}}")


def _attndsl_static(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    """One decode step with attndsl's static KV cache: the case's spec with ``cache: {layout:
    static, max_len: past + 1}``, compiled with ``--target ort --opset 24`` (the block stays on the
    portable lowering, which writes the cache with TensorScatter at opset 24), run through the
    decode helper's I/O binding (``attndsl.runtime.decode.StaticBinding``): the buffers are bound
    once as both input and output (the past K/V copied into slots ``0..past-1`` untimed), each call
    binds q/k/v and the write position, writes slot ``past`` in place and attends over the ``past +
    1`` slots."""
    from attndsl.api import parse_spec
    from attndsl.lower.compile import CompileOptions, compile_with_explanations
    from attndsl.runtime.decode import StaticBinding

    start = time.perf_counter()
    spec = parse_spec(static_spec_text(case), "bench.yaml")
    # opset 24 (TensorScatter) is the ort target's; it keeps a static cache block portable
    proto, explain = compile_with_explanations(spec, options=CompileOptions(target="ort",
                                                                            opset=24))
    data = proto.SerializeToString(deterministic=True)
    compile_s = time.perf_counter() - start
    session = ort_session(data, settings.threads)
    binding = StaticBinding(spec, session, case.batch)
    b, g, d, past = case.batch, case.kv_heads, case.head_dim, case.seq
    for w in ("key", "value"):
        buffer = np.zeros((b, g, past + 1, d), np.float32)
        buffer[:, :, :past] = inputs[f"attn.past_{w}"]
        binding.load(f"attn.cache_{w}", buffer)
    feed = {n: inputs[n] for n in ("q", "k", "v")}
    return Prepared(lambda: binding.run(feed, past), lambda out: out["y"],
                    time.perf_counter() - start,
                    {"model_mb": round(len(data) / 2**20, 2), "compile_s": compile_s,
                     "sha": model_digest(proto), "explain": [_line(e) for e in explain]})


def _graph(nodes, inputs, outputs, opsets, initializers=()) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "peer", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 10
    return model.SerializeToString()


def _io(case: Case) -> list:
    """The graph inputs every peer graph takes: packed q, k, v (and the cache)."""
    from onnx import TensorProto, helper

    b, sq, h, g, d = case.batch, case.q_len, case.heads, case.kv_heads, case.head_dim
    infos = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [b, sq, h * d]),
             helper.make_tensor_value_info("k", TensorProto.FLOAT, [b, sq, g * d]),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [b, sq, g * d])]
    if case.pattern == "decode":
        infos += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, g, case.seq, d])
                  for n in ("attn.past_key", "attn.past_value")]
    return infos


def _out(name: str = "y"):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _mha(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    from onnx import helper, numpy_helper

    start = time.perf_counter()
    names, attrs, inits = ["q", "k", "v"], {"num_heads": case.heads}, []
    if case.pattern == "causal":
        attrs["unidirectional"] = 1
    elif case.pattern in ("sliding", "bigbird"):
        bias = np.where(case.bool_mask(), 0.0, -np.inf).astype(np.float32)[None, None]
        inits.append(numpy_helper.from_array(bias, "attention_bias"))
        names += ["", "", "attention_bias"]
    infos = _io(case)
    node = helper.make_node("MultiHeadAttention", names, ["y"], domain="com.microsoft", **attrs)
    model = _graph([node], infos, [_out()], [("", 18), ("com.microsoft", 1)], inits)
    return _ort_prepared(model, inputs, settings, start)


def _gqa(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    from onnx import TensorProto, helper, numpy_helper

    if case.pattern == "loop":
        return _gqa_loop(case, inputs, settings)
    start = time.perf_counter()
    window = case.window if case.pattern == "sliding" else -1
    total = case.k_len
    inits = [numpy_helper.from_array(np.full([case.batch], total - 1, np.int32), "seqlens_k"),
             numpy_helper.from_array(np.array(total, np.int32), "total_sequence_length")]
    past = ["attn.past_key", "attn.past_value"] if case.pattern == "decode" else ["", ""]
    node = helper.make_node(
        "GroupQueryAttention", ["q", "k", "v", *past, "seqlens_k", "total_sequence_length"],
        ["y", "present_key", "present_value"], domain="com.microsoft", num_heads=case.heads,
        kv_num_heads=case.kv_heads, local_window_size=window)
    infos = _io(case)
    outs = [_out(), helper.make_tensor_value_info("present_key", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("present_value", TensorProto.FLOAT, None)]
    model = _graph([node], infos, outs, [("", 18), ("com.microsoft", 1)], inits)
    return _ort_prepared(model, inputs, settings, start, local_window_size=window)


def gqa_loop_model(case: Case) -> bytes:
    """A GroupQueryAttention model for the loop case: symbolic sequence and past lengths,
    past K/V, ``seqlens_k`` / ``total_sequence_length`` as inputs (they change every step),
    the sliding window as ``local_window_size`` and RoPE fused (``do_rotary``, the
    half-rotation convention attndsl's ``rope`` uses, theta 10000, cos / sin tables over
    the loop's positions)."""
    from onnx import TensorProto, helper, numpy_helper

    b, h, g, d, total = case.batch, case.heads, case.kv_heads, case.head_dim, case.q_len
    inv = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)
    angle = np.arange(total, dtype=np.float64)[:, None] * inv[None]
    inits = [numpy_helper.from_array(np.cos(angle).astype(np.float32), "cos_cache"),
             numpy_helper.from_array(np.sin(angle).astype(np.float32), "sin_cache")]
    f32 = TensorProto.FLOAT
    infos = [helper.make_tensor_value_info("q", f32, [b, "seq", h * d]),
             helper.make_tensor_value_info("k", f32, [b, "seq", g * d]),
             helper.make_tensor_value_info("v", f32, [b, "seq", g * d]),
             helper.make_tensor_value_info("past_key", f32, [b, g, "past", d]),
             helper.make_tensor_value_info("past_value", f32, [b, g, "past", d]),
             helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [b]),
             helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, [])]
    node = helper.make_node(
        "GroupQueryAttention", ["q", "k", "v", "past_key", "past_value", "seqlens_k",
                                "total_sequence_length", "cos_cache", "sin_cache"],
        ["y", "present_key", "present_value"], domain="com.microsoft", num_heads=h,
        kv_num_heads=g, local_window_size=case.window, do_rotary=1, rotary_interleaved=0)
    outs = [_out(), _out("present_key"), _out("present_value")]
    return _graph([node], infos, outs, [("", 18), ("com.microsoft", 1)], inits)


def _gqa_loop(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    """The loop on ORT's GroupQueryAttention: the same prefill + steps as attndsl's decode
    helper, each step's present K/V fed back as past."""
    start = time.perf_counter()
    model = gqa_loop_model(case)
    session = ort_session(model, settings.threads)
    b, g, d = case.batch, case.kv_heads, case.head_dim
    spans = [(0, case.seq)] + [(t, t + 1) for t in range(case.seq, case.q_len)]
    streams = {n: inputs[n] for n in ("q", "k", "v")}

    def call():
        past = np.zeros((b, g, 0, d), np.float32)
        key, value, ys = past, past, []
        for lo, hi in spans:
            feed = {n: x[:, lo:hi] for n, x in streams.items()}
            feed.update(past_key=key, past_value=value,
                        seqlens_k=np.full([b], hi - 1, np.int32),
                        total_sequence_length=np.array(hi, np.int32))
            y, key, value = session.run(None, feed)
            ys.append(y)
        return ys

    return Prepared(call, lambda ys: np.concatenate(ys, axis=1), time.perf_counter() - start,
                    {"model_mb": round(len(model) / 2**20, 2), "local_window_size": case.window,
                     "steps": len(spans)})


def _attention23(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    from onnx import TensorProto, helper, numpy_helper

    start = time.perf_counter()
    names, outs, inits = ["q", "k", "v"], ["y"], []
    if case.pattern in ("sliding", "bigbird"):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(case.bool_mask()), "mask"))
        names.append("mask")
    if case.pattern == "decode":
        names += [""] * (4 - len(names)) + ["attn.past_key", "attn.past_value"]
        outs += ["present_key", "present_value"]
    node = helper.make_node("Attention", names, outs, q_num_heads=case.heads,
                            kv_num_heads=case.kv_heads, is_causal=int(case.pattern == "causal"))
    infos = _io(case)
    outputs = [_out()] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                          for n in outs[1:]]
    model = _graph([node], infos, outputs, [("", 23)], inits)
    return _ort_prepared(model, inputs, settings, start)


# ------------------------------------------------------------------ memcpy probes
def _cache(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return inputs["attn.past_key"], inputs["attn.past_value"]


def _memcpy(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    """Copy the KV cache's bytes once (past K and V) into preallocated arrays: the least a
    decode step that reads the whole cache can take, in the same process and run."""
    start = time.perf_counter()
    sources = _cache(inputs)
    targets = [np.empty_like(x) for x in sources]
    for src, dst in zip(sources, targets, strict=True):  # touch the pages before timing
        np.copyto(dst, src)

    def call():
        for src, dst in zip(sources, targets, strict=True):
            np.copyto(dst, src)

    return Prepared(call, lambda _: None, time.perf_counter() - start,
                    {"bytes": case.cache_bytes()})


def _memcpy_ort(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    """The cache's bytes copied once by ONNX Runtime: Concat of past K and V into a new
    tensor, in the same kind of session as every ONNX model (so with ORT's call overhead
    and output allocation, as a decode graph has them)."""
    from onnx import helper

    start = time.perf_counter()
    infos = [i for i in _io(case) if i.name in ("attn.past_key", "attn.past_value")]
    node = helper.make_node("Concat", ["attn.past_key", "attn.past_value"], ["y"], axis=0)
    model = _graph([node], infos, [_out()], [("", 18)])
    feed = dict(zip(("attn.past_key", "attn.past_value"), _cache(inputs), strict=True))
    prepared = _ort_prepared(model, feed, settings, start, bytes=case.cache_bytes())
    prepared.output = lambda _: None
    return prepared


# ------------------------------------------------------------------ PyTorch
def _torch_setup(settings: Settings):
    import torch

    torch.set_num_threads(settings.threads)
    return torch


class _SdpaModule:
    """HF-style attention core: packed q/k/v -> heads -> SDPA -> packed output."""

    @staticmethod
    def build(case: Case, use_bool_mask: bool, native_gqa: bool = True):
        """``native_gqa``: SDPA's ``enable_gqa`` (4x faster on CPU than repeating K/V; the
        TorchScript exporter cannot convert it, so the exported module repeats K/V)."""
        import torch
        import torch.nn.functional as F

        b, sq, h, g, d = case.batch, case.q_len, case.heads, case.kv_heads, case.head_dim

        class Core(torch.nn.Module):
            def __init__(self):
                super().__init__()
                mask = torch.from_numpy(np.ascontiguousarray(case.bool_mask()))
                self.register_buffer("mask", mask if use_bool_mask else None)

            def forward(self, q, k, v, past_key=None, past_value=None):
                q = q.view(b, sq, h, d).transpose(1, 2)
                k = k.view(b, sq, g, d).transpose(1, 2)
                v = v.view(b, sq, g, d).transpose(1, 2)
                if past_key is not None:
                    k = torch.cat([past_key, k], dim=2)
                    v = torch.cat([past_value, v], dim=2)
                kr, vr, gqa = k, v, {}
                if g != h and native_gqa:
                    gqa = {"enable_gqa": True}
                elif g != h:  # repeat_kv, as Hugging Face models do before SDPA
                    kr = k.repeat_interleave(h // g, dim=1)
                    vr = v.repeat_interleave(h // g, dim=1)
                o = F.scaled_dot_product_attention(
                    q, kr, vr, attn_mask=self.mask,
                    is_causal=case.pattern == "causal" and self.mask is None, **gqa)
                o = o.transpose(1, 2).reshape(b, sq, h * d)
                return (o, k, v) if past_key is not None else o

        return Core().eval()


def _feed_torch(case: Case, inputs: dict[str, np.ndarray]) -> tuple:
    import torch

    names = ["q", "k", "v"] + (["attn.past_key", "attn.past_value"]
                               if case.pattern == "decode" else [])
    return tuple(torch.from_numpy(inputs[n]) for n in names)


def _first(result) -> np.ndarray:
    return (result[0] if isinstance(result, tuple) else result).numpy()


def _sdpa(use_bool_mask: bool):
    def prepare(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
        torch = _torch_setup(settings)
        start = time.perf_counter()
        module = _SdpaModule.build(case, use_bool_mask)
        args = _feed_torch(case, inputs)

        def call():
            with torch.inference_mode():
                return module(*args)

        return Prepared(call, _first, time.perf_counter() - start)

    return prepare


def _flex(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    torch = _torch_setup(settings)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    b, s, h, d = case.batch, case.seq, case.heads, case.head_dim
    start = time.perf_counter()
    mask_mod = _mask_mod(case, torch)
    block_mask = create_block_mask(mask_mod, None, None, s, s, device="cpu")
    mask_s = time.perf_counter() - start
    fn = torch.compile(flex_attention) if settings.compile_flex else flex_attention
    q, k, v = (x.view(b, s, h, d).transpose(1, 2) for x in _feed_torch(case, inputs))

    def call():
        with torch.inference_mode():
            return fn(q, k, v, block_mask=block_mask).transpose(1, 2).reshape(b, s, h * d)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compile_start = time.perf_counter()
        call()  # torch.compile compiles on the first call
    compile_s = time.perf_counter() - compile_start
    return Prepared(call, _first, time.perf_counter() - start,
                    {"block_mask_s": round(mask_s, 2), "compile_s": round(compile_s, 2),
                     "compiled": settings.compile_flex, "block_size": block_mask.BLOCK_SIZE[0]})


def _mask_mod(case: Case, torch):
    w = case.window
    if case.pattern == "causal":
        return lambda b, h, q, k: k <= q
    if case.pattern == "sliding":
        return lambda b, h, q, k: (k <= q) & (q - k < w)
    from attndsl.features.masks.random import random_blocks

    blk, s = case.block, case.seq
    half = blk + blk // 2
    table = random_blocks(3, blk, 0, s, s)[::blk, ::blk]
    chosen = torch.from_numpy(np.ascontiguousarray(table))

    def bigbird(b, h, q, k):
        local = (k >= q - half) & (k <= q + half)
        glob = (q < blk) | (q >= s - blk) | (k < blk) | (k >= s - blk)
        return local | glob | chosen[q // blk, k // blk]

    return bigbird


def _export(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    torch = _torch_setup(settings)
    start = time.perf_counter()
    module = _SdpaModule.build(case, use_bool_mask=case.pattern in ("sliding", "bigbird"),
                               native_gqa=False)
    args = _feed_torch(case, inputs)
    names = ["q", "k", "v"] + (["attn.past_key", "attn.past_value"]
                               if case.pattern == "decode" else [])
    outs = ["y"] + (["present_key", "present_value"] if case.pattern == "decode" else [])
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=18,
                          input_names=names, output_names=outs)
    export_s = time.perf_counter() - start
    return _ort_prepared(buf.getvalue(), inputs, settings, start, export_s=round(export_s, 2))


# ------------------------------------------------------------------ the table of peers
_MLA = "a core-attention peer; the mla case is a whole layer (see mla-plain, mla-full-kv)"


def _only(*patterns: str) -> Callable[[Case], str | None]:
    def applies(case: Case) -> str | None:
        if case.pattern in patterns:
            return None
        return _MLA if case.pattern == "mla" else f"not for {case.pattern}"
    return applies


_DECODE_MHA = "MultiHeadAttention has no GQA (kv heads != heads); see ort-gqa"
# one-call attention (every case but the generation loop, which only attndsl and ort-gqa run)
_ONE_CALL = ("dense", "causal", "sliding", "bigbird", "decode")


def _mha_applies(case: Case) -> str | None:
    if case.pattern == "decode":
        return _DECODE_MHA
    return _only(*_ONE_CALL)(case)


PEERS: list[Runner] = [
    Runner("sdpa", "torch", "PyTorch SDPA: no mask (dense), is_causal (causal); decode: "
           "cat of the cache + SDPA(enable_gqa=True)", _sdpa(False),
           _only("dense", "causal", "decode")),
    Runner("sdpa-mask", "torch", "PyTorch SDPA with the bool mask [S, S]", _sdpa(True),
           _only("causal", "sliding", "bigbird")),
    Runner("flex", "torch", "torch.compile(flex_attention) with a BlockMask (compile time "
           "excluded, reported as setup)", _flex, _only("causal", "sliding", "bigbird"),
           quadratic=lambda case: False),
    Runner("export", "export", "torch.onnx.export (TorchScript exporter, opset 18) of the SDPA "
           "module, run in ORT", _export, _only(*_ONE_CALL)),
    Runner("ort-mha", "ort", "com.microsoft.MultiHeadAttention (unidirectional for causal, "
           "additive attention_bias for other masks)", _mha, _mha_applies),
    Runner("ort-gqa", "ort", "com.microsoft.GroupQueryAttention (causal only; "
           "local_window_size for sliding; past KV for decode; the loop: prefill + steps with "
           "fused RoPE)", _gqa, _only("causal", "sliding", "decode", "loop"),
           quadratic=lambda case: False),  # O(S²) time, but no [B, H, S, S] tensor
    Runner("onnx-attention", "ort", "ONNX Attention-23 (is_causal, bool attn_mask, past KV)",
           _attention23, _only(*_ONE_CALL)),
    Runner("attndsl static-cache", "attndsl", "attndsl's decode step with a static KV cache "
           "(cache: {layout: static, max_len: past + 1}; --target ort --opset 24: the portable "
           "block with TensorScatter), buffers "
           "bound once through ORT I/O binding and written in place", _attndsl_static,
           _only("decode"), quadratic=lambda case: False),
    Runner("memcpy", "probe", "numpy copy of the KV cache's bytes (past K and V) into "
           "preallocated arrays: the decode step's memory-bandwidth floor", _memcpy,
           _only("decode"), quadratic=lambda case: False),
    Runner("memcpy-ort", "probe", "ORT Concat of past K and V (the cache's bytes copied once, "
           "with ORT's call overhead and a fresh output)", _memcpy_ort, _only("decode"),
           quadratic=lambda case: False),
]
