"""The runners of the ``mla`` case beyond attndsl's variants (which compile the case's spec:
with a cache the block attends over the latent, ``kv_b_proj`` absorbed):

- ``mla-plain``: the same layer with ``absorb: never``: each step expands the whole latent
  cache into per-head K and V through ``kv_b_proj`` (the plain form); same weights, so the
  same outputs;
- ``mla-full-kv``: attention over a full per-head K/V cache ([B, H, P, dn + dr] and [B, H, P,
  dv], what a model that caches K and V keeps): attndsl's core-mode attention with a cache,
  fed the step's per-head q, k, v and the K/V cache expanded from the latent once, in
  ``prepare``. The timed call is the attention step alone (the new token's projections are
  not in it), so it is a lower bound of a full-K/V decode step; its output goes through
  ``o_proj`` in numpy for the cross-check only.
"""

from __future__ import annotations

import time

import numpy as np

from .cases import Case
from .peers import Prepared, Runner, Settings, Skip, _ort_prepared


def _applies(case: Case) -> str | None:
    return None if case.pattern == "mla" else f"not for {case.pattern}"


def _plain(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    from attndsl.api import parse_spec
    from attndsl.lower.compile import compile_with_explanations

    start = time.perf_counter()
    model = parse_spec(case.mla_spec_text("never", settings.dynamic), "bench.yaml")
    proto, explain = compile_with_explanations(model)
    data = proto.SerializeToString(deterministic=True)
    return _ort_prepared(data, inputs, settings, start, outputs=None,
                         explain=[f"{e.block}: {e.lowering} ({e.reason})" for e in explain])


def _core_spec(case: Case) -> str:
    h, dq, dv = case.heads, case.head_dim + case.rope_dim, case.head_dim
    return "\n".join([
        "attndsl: 1", "name: bench_mla_full_kv", f"dims: {{batch: {case.batch}, seq: 1}}",
        "inputs:", f"  q: [batch, seq, {h * dq}]", f"  k: [batch, seq, {h * dq}]",
        f"  v: [batch, seq, {h * dv}]", "blocks:", "  attn:", "    project: false",
        "    query: q", "    key: k", "    value: v", f"    heads: {h}",
        f"    head_dim: {dq}", f"    v_head_dim: {dv}", "    mask: causal", "    cache: true",
        "outputs:", "  y: attn", ""])


def full_kv_feed(case: Case, inputs: dict[str, np.ndarray], w: dict[str, np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """The step's packed per-head q, k, v and the per-head K/V cache expanded from the latent
    cache: what a full-K/V model holds at this step (float32; kernels.py's formulas)."""
    from attndsl.features import kernels as K

    h, dn, dr, r = case.heads, case.head_dim, case.rope_dim, case.kv_lora_rank
    c = K.MLAConfig(heads=h, kv_lora_rank=r, qk_nope_head_dim=dn, qk_rope_head_dim=dr,
                    v_head_dim=dn, q_lora_rank=case.q_lora_rank)
    wk = {k.removeprefix("attn."): np.asarray(v, np.float64) for k, v in w.items()}
    x, past_lat, past_rope = (inputs[n] for n in ("x", "attn.past_latent", "attn.past_rope"))
    b, p = past_lat.shape[:2]
    angles = K.rope_angles(np.full((b, 1), p), c.rope_inv_freq())
    qa = K.rms_norm(K.linear(x, wk["q_a_proj.weight"]), wk["q_a_layernorm.weight"], 1e-6)
    q = K.split_heads(K.linear(qa, wk["q_b_proj.weight"]), h)
    q = np.concatenate([q[..., :dn], K.apply_rope(q[..., dn:], angles, "deinterleave")], -1)
    lat, k_rope = K.mla_latent(x, wk, c, angles)
    wkv = wk["kv_b_proj.weight"].astype(np.float32)

    def expand(latent: np.ndarray, rope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kv = (latent.astype(np.float32) @ wkv.T).reshape(b, -1, h, 2 * dn).transpose(0, 2, 1, 3)
        rope = np.broadcast_to(rope.astype(np.float32)[:, None], kv.shape[:3] + (dr,))
        return np.concatenate([kv[..., :dn], rope], -1), kv[..., dn:]

    k_new, v_new = expand(lat, k_rope)
    k_past, v_past = expand(past_lat, past_rope)

    def pack(t: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(t.transpose(0, 2, 1, 3).reshape(b, 1, -1), np.float32)

    return {"q": pack(q), "k": pack(k_new), "v": pack(v_new),
            "attn.past_key": np.ascontiguousarray(k_past, np.float32),
            "attn.past_value": np.ascontiguousarray(v_past, np.float32)}


def _full_kv(case: Case, inputs: dict[str, np.ndarray], settings: Settings) -> Prepared:
    from attndsl.api import parse_spec
    from attndsl.lower.compile import compile_model
    from attndsl.weights import load_weights

    if settings.dynamic:
        raise Skip("static shapes only")
    start = time.perf_counter()
    w = load_weights(parse_spec(case.mla_spec_text(), "bench.yaml"))
    feed = full_kv_feed(case, inputs, w)
    proto = compile_model(parse_spec(_core_spec(case), "bench.yaml"))
    prepared = _ort_prepared(proto.SerializeToString(deterministic=True), feed, settings, start,
                             outputs=None, cache_mib=round((feed["attn.past_key"].nbytes
                                                            + feed["attn.past_value"].nbytes)
                                                           / 2**20, 1))
    o_proj = np.asarray(w["attn.o_proj.weight"], np.float32)
    prepared.output = lambda r: r[0] @ o_proj.T  # the cross-check only (not timed)
    return prepared


MLA_RUNNERS: list[Runner] = [
    Runner("mla-plain", "attndsl", "the mla layer with absorb: never: kv_b_proj expands the "
           "whole latent cache per head at each step", _plain, _applies,
           quadratic=lambda case: False),
    Runner("mla-full-kv", "attndsl", "attention over a full per-head K/V cache (core mode, the "
           "step's q/k/v precomputed): the attention step of a model caching K and V",
           _full_kv, _applies, quadratic=lambda case: False),
]
