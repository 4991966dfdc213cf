"""Incremental decoding with the KV cache: prefill, then one token at a time, each step
feeding ``present_key`` / ``present_value`` back as ``past_key`` / ``past_value`` (or the
entries of a feature's own cache layout, MLA's ``present_latent`` / ``present_rope``).

``decode_steps`` runs the prefill and the steps on a session (a generation loop: what the
benchmarks time); ``decode_loop`` runs a compiled model both ways (step by step, and once over
the whole sequence with empty caches) so the two can be compared; ``stitch`` joins the steps'
outputs into full-sequence shapes. Every block must be cached self-attention: a query only sees keys
of its own stream, so a step needs nothing but its new rows and the caches.

Inputs other than the streams are sliced to what a step covering positions ``[start, end)``
needs: document ids keep their first ``end`` columns (``[batch, past_len + seq]``), bool
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
from ..features.registry import cache_shapes, rule
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
    out = {}
    for b in model.blocks:
        for what, shape in cache_shapes(b, batch, 0).items():
            out[f"{b.name}.past_{what}"] = np.zeros(shape, model.dtype)
    return out


def decode_steps(model: Model, session, inputs: Mapping[str, np.ndarray], prompt_len: int,
                 keep_caches: bool = True
                 ) -> tuple[list[dict[str, np.ndarray]], list[tuple[int, int]]]:
    """On an existing ONNX Runtime ``session`` of the compiled ``model``: a prefill over
    positions ``[0, prompt_len)`` of the full-sequence ``inputs`` (spec inputs; cache inputs,
    if given, are ignored), then one step per remaining position, each step's present caches
    fed back as the next step's past. Returns each step's outputs and the ``(start, end)``
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
    caches = _empty_caches(model, batch)
    present = {f"{b.name}.present_{w}" for b in model.blocks for w in cache_shapes(b, 0, 0)}
    steps: list[dict[str, np.ndarray]] = []
    for start, end in spans:
        feed = {n: _slice(v, roles[n], start, end) for n, v in spec_inputs.items()}
        out = run_session(session, {**feed, **caches})
        if steps and not keep_caches:
            steps[-1] = {n: v for n, v in steps[-1].items() if n not in present}
        steps.append(out)
        caches = {f"{b.name}.past_{w}": out[f"{b.name}.present_{w}"]
                  for b in model.blocks for w in cache_shapes(b, 0, 0)}
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
    full length, as the future keys get probability 0), caches from the last step."""
    total = run.spans[-1][1]
    out: dict[str, np.ndarray] = {}
    for o in model.outputs:
        parts = [s[o.name] for s in run.steps]
        if o.attr == "weights":
            parts = [np.pad(p, [(0, 0)] * 3 + [(0, total - p.shape[-1])]) for p in parts]
            out[o.name] = np.concatenate(parts, axis=2)
        else:
            out[o.name] = np.concatenate(parts, axis=1)
    for b in model.blocks:
        for w in cache_shapes(b, 0, 0):
            name = f"{b.name}.present_{w}"
            out[name] = run.steps[-1][name]
    return out


def max_errors(model: Model, run: DecodeRun) -> dict[str, float]:
    """Max abs difference, per output, between the stitched steps and the full run."""
    stitched = stitch(model, run)
    return {name: float(np.max(np.abs(stitched[name].astype(np.float64)
                                      - run.full[name].astype(np.float64)), initial=0.0))
            for name in stitched}
