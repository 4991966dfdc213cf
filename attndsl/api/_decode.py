"""``decode``: a generation loop from Python — a prefill over the prompt, then one position at
a time with the KV cache (``runtime.decode.decode_steps``: a growing cache fed back step by
step, a static cache written in place through ONNX Runtime's I/O binding)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AttnDSLError, InputError
from ..ir import Model
from ._compile import WeightsLike
from ._run import InputsLike, _model_and_proto, _random_inputs, read_inputs

if TYPE_CHECKING:
    import numpy as np

    from ._run import RunTarget

__all__ = ["DecodeResult", "decode"]


@dataclass(frozen=True)
class DecodeResult:
    """A decode loop: the spec's IR, the inputs (full sequence), the outputs of the steps
    joined into full-sequence shapes (block outputs along the sequence, the last step's
    caches), the prompt length, the positions each step covered, and the loop's wall time
    (prefill included; session creation and compilation excluded)."""

    model: Model
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    prompt_len: int
    spans: tuple[tuple[int, int], ...]
    seconds: float

    @property
    def new_tokens(self) -> int:
        """Positions decoded one at a time, after the prompt."""
        return self.spans[-1][1] - self.prompt_len if self.spans else 0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of the whole loop (the prefill's time included)."""
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def decode(spec_or_model: RunTarget, inputs: InputsLike | None = None, *, prompt_len: int,
           sizes: Mapping[str, int] | None = None, seed: int = 0, provider: str = "cpu",
           opset: int = 18, target: str = "portable", sparse: str = "auto",
           block_size: int | None = None, seq_hint: int | None = None,
           passes: str | Sequence[str] | None = None,
           weights: WeightsLike | None = None) -> DecodeResult:
    """Run a spec (compiled with the options of ``compile``), an attndsl ``.onnx`` file or
    ModelProto as a generation loop: a prefill over positions ``[0, prompt_len)`` of the
    full-sequence ``inputs`` (arrays by name or an ``.npz``; None: random valid inputs of
    ``sizes``, default batch 2 and length 7), then one step per remaining position, the
    caches carried from step to step. Every block must be cached self-attention.

    The outputs equal one run over the whole sequence (``runtime.decode.decode_loop``
    checks that; the tests do it for every cached spec)."""
    import numpy as np

    from ..runtime import make_session
    from ..runtime.decode import DecodeRun, decode_steps, stitch

    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 0:
        raise AttnDSLError(f"prompt_len must be a non-negative integer, got {prompt_len!r}")
    model, proto = _model_and_proto(spec_or_model, opset=opset, target=target, sparse=sparse,
                                    block_size=block_size, seq_hint=seq_hint, passes=passes,
                                    weights=weights)
    if not model.blocks or not all(b.cache for b in model.blocks):
        raise InputError("decode needs every block to have a KV cache",
                         hint="set 'cache: true' on every block")
    if inputs is None:
        arrays = _random_inputs(model, sizes, seed, 0)
    elif isinstance(inputs, (str, os.PathLike)):
        arrays = read_inputs(inputs, [i.name for i in model.inputs])
    elif isinstance(inputs, Mapping):
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
    else:
        raise AttnDSLError(f"inputs must be arrays by name or an .npz path, got "
                           f"{type(inputs).__name__}")
    is_file = (isinstance(spec_or_model, (str, os.PathLike))
               and Path(spec_or_model).suffix.lower() == ".onnx")
    session = make_session(Path(spec_or_model) if is_file else proto, provider=provider)
    t0 = time.perf_counter()
    steps, spans = decode_steps(model, session, arrays, prompt_len, keep_caches=False)
    seconds = time.perf_counter() - t0
    outputs = stitch(model, DecodeRun(steps, spans, {}))
    return DecodeResult(model, arrays, outputs, prompt_len, tuple(spans), seconds)
