"""Incremental decoding with the KV cache: prefill, then one token at a time, each step
feeding ``present_key`` / ``present_value`` back as ``past_key`` / ``past_value`` (or the
entries of a feature's own cache layout, MLA's ``present_latent`` / ``present_rope``).

A block with a static cache (``cache: {layout: static, max_len: N}``) keeps its buffers
``cache_key`` / ``cache_value`` in ONNX Runtime values allocated once per loop; each step is
run through I/O binding with the buffer bound as both the input and the output
(``cache_key_out``), so ONNX Runtime's TensorScatter / ScatterElements write the step's rows
in place instead of copying the cache (docs/runtimes.md), and the step feeds the write
position ``write_pos`` = the step's first position.

``decode_steps`` runs the prefill and the steps on a session (a generation loop: what the
benchmarks time); ``decode_loop`` runs a compiled model both ways (step by step, and once over
the whole sequence with empty caches) so the two can be compared; ``stitch`` joins the steps'
outputs into full-sequence shapes. Every block must be cached self-attention: a query only sees keys
of its own stream, so a step needs nothing but its new rows and the caches.

Inputs other than the streams are sliced to what a step covering positions ``[start, end)``
needs: inputs with one entry per token (block features' "stream" inputs, e.g. RoPE position
ids ``[batch, seq]``) keep the step's columns like the streams, document ids keep their first
``end`` columns (``[batch, past_len + seq]``), bool
masks and bias inputs keep query rows ``start:end`` and key columns ``:end`` (where those
axes are not broadcast), lengths are used as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import AttnDSLError
from ..features import nodes as mn
from ..features.registry import block_feature_of, cache_feedback, cache_inputs, cache_outputs, rule
from ..ir.nodes import Model
from . import make_session, run_session


@dataclass(frozen=True)
class DecodeRun:
    """The result of ``decode_loop``: each step's outputs (keyed by ONNX name), the
    ``(start, end)`` positions each step covered, and one full-sequence run."""

    steps: list[dict[str, np.ndarray]]
    spans: list[tuple[int, int]]
    full: dict[str, np.ndarray]


# how a step slices an input by the role its feature gives it: ids [batch, k_len] keep the
# columns :end, inputs over the cells keep query rows and key columns; lengths stay whole
_STEP_ROLES = {"ids": "ids", "cells": "qk"}


def _roles(model: Model) -> dict[str, str]:
    """How each graph input is sliced per step: 'stream' (rows), 'ids' (columns :end),
    'qk' (query rows and key columns) or 'whole'."""
    roles = {i.name: "whole" for i in model.inputs}
    for b in model.blocks:
        if not (b.cache and b.self_attention):
            raise AttnDSLError(
                f"block '{b.name}' is not cached self-attention; a decode loop needs "
                "'cache: true' on every block and no cross-attention")
        for stream in (b.query, b.key, b.value):
            if model.has_input(stream):
                roles[stream] = "stream"
        nodes = [*mn.walk(b.mask), *b.score]
        for node in nodes:
            for name, role in rule("inputs", node)(node):
                if role in _STEP_ROLES:
                    roles[name] = _STEP_ROLES[role]
        for f in b.features:  # e.g. RoPE position ids [batch, seq]: the step's columns
            for name, role in block_feature_of(f).inputs(f):
                if role == "stream":
                    roles[name] = "stream"
    return roles


def _slice(value: np.ndarray, role: str, start: int, end: int) -> np.ndarray:
    if role == "stream":
        return value[:, start:end]
    if role == "ids":
        return value[:, :end]
    if role == "qk":
        if value.ndim >= 2 and value.shape[-2] > 1:
            value = value[..., start:end, :]
        if value.ndim >= 1 and value.shape[-1] > 1:
            value = value[..., :end]
        return value
    return value


def sequence_length(model: Model, inputs: Mapping[str, np.ndarray]) -> int:
    """The length of the (time-sliced) streams in ``inputs``; they must all agree."""
    roles = _roles(model)
    lengths = {np.asarray(inputs[n]).shape[1] for n, r in roles.items() if r == "stream"}
    if len(lengths) != 1:
        raise AttnDSLError(f"the stream inputs have different lengths: {sorted(lengths)}")
    return lengths.pop()


def _empty_caches(model: Model, batch: int) -> dict[str, np.ndarray]:
    """Every cache input before the first token: no past positions (growing), zeroed
    buffers and write position 0 (static)."""
    out = {}
    for b in model.blocks:
        for name, shape in cache_inputs(b, batch, 0).items():
            out[name] = np.array(0, np.int64) if shape == () else np.zeros(shape, model.dtype)
    return out


def _check_fits(model: Model, total: int) -> None:
    for b in model.blocks:
        if b.static_cache and total > b.cache_max_len:
            raise AttnDSLError(f"block '{b.name}': {total} positions do not fit its static "
                               f"cache of {b.cache_max_len} slots",
                               hint="decode fewer tokens, or raise the cache's max_len")


class StaticBinding:
    """The static caches of one decode loop on ``session``: every buffer an ONNX Runtime
    value allocated (zeroed) once and bound as both the cache input and the cache output,
    so a step writes its rows in place; the other inputs are bound per step (``run``)."""

    def __init__(self, model: Model, session, batch: int):
        import onnxruntime as ort

        self.model, self.session = model, session
        device = getattr(session, "chosen_provider", "cpu")
        self.binding = session.io_binding()
        self.buffers: dict[str, object] = {}  # cache output name -> its OrtValue
        caches = _empty_caches(model, batch)
        for b in model.blocks:
            if not b.static_cache:
                continue
            for out, inp in cache_feedback(b).items():
                value = ort.OrtValue.ortvalue_from_numpy(caches[inp], device, 0)
                self.binding.bind_ortvalue_input(inp, value)
                self.buffers[out] = value
        self.device = device
        self.outputs = [o.name for o in session.get_outputs() if o.name not in self.buffers]
        # the binding lists its outputs in the order they were bound: buffers first
        self.bound = [*self.buffers, *self.outputs]

    def _bind_outputs(self) -> None:
        """Each step: the buffers as the cache outputs (the same values as the inputs: in
        place), the other outputs left for ONNX Runtime to allocate (their shapes change
        from the prefill to the steps, and a value it allocated keeps its shape)."""
        b = self.binding
        b.clear_binding_outputs()
        for name, value in self.buffers.items():
            b.bind_ortvalue_output(name, value)
        for name in self.outputs:
            b.bind_output(name, self.device)

    def run(self, feed: Mapping[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
        """One step from position ``start``: every non-cache output (and the growing
        caches' presents) as numpy arrays; the static buffers stay bound."""
        b = self.binding
        for name, value in feed.items():
            b.bind_cpu_input(name, np.ascontiguousarray(value))
        for blk in self.model.blocks:
            if blk.static_cache:
                b.bind_cpu_input(f"{blk.name}.write_pos", np.array(start, np.int64))
        self._bind_outputs()
        try:
            self.session.run_with_iobinding(b)
        except Exception as err:  # ONNX Runtime's errors have no common public base
            raise AttnDSLError(f"running the decode step failed: {err}") from None
        values = dict(zip(self.bound, b.get_outputs(), strict=True))
        # copies: ``OrtValue.numpy()`` shares the value's memory, which the next step's
        # binding (or the loop's end) frees
        return {name: np.array(values[name].numpy()) for name in self.outputs}

    def load(self, name: str, value: np.ndarray) -> None:
        """Overwrite the buffer of cache input ``name`` (``<block>.cache_key``) with
        ``value`` (its whole shape), e.g. a cache filled elsewhere."""
        out = next(o for b in self.model.blocks if b.static_cache
                   for o, i in cache_feedback(b).items() if i == name)
        self.buffers[out].update_inplace(np.ascontiguousarray(value))

    def caches(self) -> dict[str, np.ndarray]:
        """A copy of every static buffer as it is now."""
        return {name: np.array(value.numpy()) for name, value in self.buffers.items()}


def decode_steps(model: Model, session, inputs: Mapping[str, np.ndarray], prompt_len: int,
                 keep_caches: bool = True
                 ) -> tuple[list[dict[str, np.ndarray]], list[tuple[int, int]]]:
    """On an existing ONNX Runtime ``session`` of the compiled ``model``: a prefill over
    positions ``[0, prompt_len)`` of the full-sequence ``inputs`` (spec inputs; cache inputs,
    if given, are ignored), then one step per remaining position, each step's present caches
    fed back as the next step's past (static caches: written in place in buffers bound
    once, ``StaticBinding``). Returns each step's outputs and the ``(start, end)``
    positions it covered (what a generation loop does, without the full-sequence check).

    ``keep_caches=False`` drops each step's present caches from its outputs once the next
    step has consumed them (the last step keeps its own), so the loop holds one cache at a
    time, as a generation loop does, instead of every step's."""
    roles = _roles(model)
    total = sequence_length(model, inputs)
    if not 0 <= prompt_len <= total:
        raise AttnDSLError(f"prompt length {prompt_len} is outside 0..{total}")
    spec_inputs = {i.name: np.asarray(inputs[i.name]) for i in model.inputs}
    batch = next(spec_inputs[n] for n, r in roles.items() if r == "stream").shape[0]
    spans = ([(0, prompt_len)] if prompt_len else []) + [(t, t + 1)
                                                        for t in range(prompt_len, total)]
    _check_fits(model, total)
    static = StaticBinding(model, session, batch) if any(
        b.static_cache for b in model.blocks) else None
    feedback = {out: inp for b in model.blocks if not b.static_cache
                for out, inp in cache_feedback(b).items()}  # growing: present -> past
    caches = {n: v for n, v in _empty_caches(model, batch).items()
              if static is None or n in feedback.values()}
    present = {n for b in model.blocks for n in cache_outputs(b, 0, 0)}
    steps: list[dict[str, np.ndarray]] = []
    for start, end in spans:
        feed = {n: _slice(v, roles[n], start, end) for n, v in spec_inputs.items()}
        if static is None:
            out = run_session(session, {**feed, **caches})
        else:
            out = static.run({**feed, **caches}, start)
            if keep_caches or end == total:  # a copy: the buffers change in the next step
                out.update(static.caches())
        if steps and not keep_caches:
            steps[-1] = {n: v for n, v in steps[-1].items() if n not in present}
        steps.append(out)
        caches = {inp: out[o] for o, inp in feedback.items()}
    return steps, spans


def decode_loop(model: Model, proto: onnx.ModelProto | bytes,
                inputs: Mapping[str, np.ndarray], prompt_len: int,
                provider: str = "cpu") -> DecodeRun:
    """Run ``proto`` (the compiled ``model``) on the full-sequence ``inputs`` (spec inputs;
    cache inputs, if given, are ignored) in two ways: a prefill over positions
    ``[0, prompt_len)`` then one step per remaining position, each step's present caches fed
    back as the next step's past (``decode_steps``); and one run over the whole sequence
    from empty caches."""
    session = make_session(proto, provider)
    steps, spans = decode_steps(model, session, inputs, prompt_len)
    spec_inputs = {i.name: np.asarray(inputs[i.name]) for i in model.inputs}
    batch = next(spec_inputs[n] for n, r in _roles(model).items() if r == "stream").shape[0]
    full = run_session(session, {**spec_inputs, **_empty_caches(model, batch)})
    return DecodeRun(steps, spans, full)


def stitch(model: Model, run: DecodeRun) -> dict[str, np.ndarray]:
    """The steps' outputs joined into the full run's shapes: block outputs along the
    sequence, probabilities along the query axis (each step's keys padded with zeros to the
    full length, as the future keys get probability 0; a static cache's steps already span
    its max_len slots), caches from the last step."""
    total = run.spans[-1][1]
    out: dict[str, np.ndarray] = {}
    for o in model.outputs:
        parts = [s[o.name] for s in run.steps]
        if o.attr == "weights":
            width = max(total, *(p.shape[-1] for p in parts))
            parts = [np.pad(p, [(0, 0)] * 3 + [(0, width - p.shape[-1])]) for p in parts]
            out[o.name] = np.concatenate(parts, axis=2)
        else:
            out[o.name] = np.concatenate(parts, axis=1)
    for b in model.blocks:
        for name in cache_outputs(b, 0, 0):
            out[name] = run.steps[-1][name]
    return out


def max_errors(model: Model, run: DecodeRun) -> dict[str, float]:
    """Max abs difference, per output, between the stitched steps and the full run."""
    stitched = stitch(model, run)
    return {name: float(np.max(np.abs(stitched[name].astype(np.float64)
                                      - run.full[name].astype(np.float64)), initial=0.0))
            for name in stitched}
