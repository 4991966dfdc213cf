"""``attndsl.decode``: the generation loop from Python (prefill, then one position at a time
with the KV cache) gives what one run over the whole sequence gives, for a growing and a
static cache, from a spec and from a compiled file; bad requests are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import attndsl
from attndsl.errors import AttnDSLError, InputError

ROOT = Path(__file__).resolve().parents[1]
SPECS = [ROOT / "examples" / "mistral_block.yaml", ROOT / "specs" / "static_cache.yaml"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
@pytest.mark.parametrize("prompt_len", [0, 1, 5])
def test_decode_equals_one_full_run(spec: Path, prompt_len: int) -> None:
    r = attndsl.decode(spec, prompt_len=prompt_len, sizes={"batch": 2, "seq": 8}, seed=3)
    model = r.model
    full = attndsl.run(spec, sizes={"batch": 2, "seq": 8}, seed=3)  # the same random inputs
    for out in model.outputs:
        np.testing.assert_allclose(r.outputs[out.name], full[out.name], atol=1e-5)
    assert r.new_tokens == 8 - prompt_len
    assert r.spans[-1] == (7, 8) and r.seconds > 0 and r.tokens_per_second > 0


def test_decode_a_compiled_file(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    attndsl.compile_to(SPECS[0], out)
    a = attndsl.decode(out, prompt_len=2, sizes={"batch": 1, "seq": 5})
    b = attndsl.decode(SPECS[0], a.inputs, prompt_len=4)
    np.testing.assert_allclose(a.outputs["y"], b.outputs["y"], atol=1e-5)


def test_decode_refuses_what_it_cannot_do() -> None:
    with pytest.raises(InputError, match="decode needs every block to have a KV cache"):
        attndsl.decode(ROOT / "examples" / "gpt2_causal.yaml", prompt_len=1)
    with pytest.raises(AttnDSLError, match="prompt_len must be a non-negative integer"):
        attndsl.decode(SPECS[0], prompt_len=-1)
    with pytest.raises(AttnDSLError, match="prompt length 9 is outside 0..7"):
        attndsl.decode(SPECS[0], prompt_len=9, sizes={"batch": 1, "seq": 7})
