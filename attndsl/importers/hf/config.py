"""Reading a checkpoint's ``config.json``, and the tables of config keys.

Every key of ``config.json`` is classified before anything is imported:

- an **attention key** is read by one of the parts of the architecture (``parts.py``); the
  part checks its value and refuses values it cannot express;
- a **harmless key** is known not to change what an attention module computes (vocabulary,
  MLP and MoE sizes, tokens, dropout, which is off at inference, generation settings...):
  ``COMMON_HARMLESS`` for every architecture, plus each architecture's own list;
- any other key whose name could plausibly be about attention (``ATTENTION_WORDS``) is
  refused with an error naming it; other unknown keys are reported as notes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ...errors import AttnDSLError, did_you_mean

MAX_CONFIG_BYTES = 4 << 20


class HFImportError(AttnDSLError):
    """A checkpoint the importer cannot turn into a spec that computes the same thing."""


# Keys every transformers config has or may have, none of which changes an attention
# module's output at inference (PretrainedConfig's own keys, tokens, heads of the model that
# are not attention, dropout probabilities, MLP sizes and activations, norm epsilons of the
# layer norms outside the attention module, embeddings, generation settings).
COMMON_HARMLESS: frozenset[str] = frozenset("""
_name_or_path architectures auto_map dtype torch_dtype transformers_version model_type
id2label label2id num_labels problem_type return_dict output_attentions output_hidden_states
torchscript use_return_dict chunk_size_feed_forward is_encoder_decoder tie_word_embeddings
tie_encoder_decoder pruned_heads tokenizer_class prefix task_specific_params finetuning_task
bos_token_id eos_token_id pad_token_id sep_token_id decoder_start_token_id
forced_bos_token_id forced_eos_token_id begin_suppress_tokens suppress_tokens
vocab_size use_cache initializer_range init_std initializer_factor
hidden_act hidden_activation activation_function activation intermediate_size mlp_bias
rms_norm_eps layer_norm_eps layer_norm_epsilon
attention_dropout attn_pdrop resid_pdrop embd_pdrop hidden_dropout dropout
activation_dropout classifier_dropout dropout_rate
max_position_embeddings cross_attention_hidden_size
quantization_config _attn_implementation_autoset
max_length min_length do_sample early_stopping num_beams temperature top_k top_p
repetition_penalty length_penalty no_repeat_ngram_size num_return_sequences
""".split())  # noqa: SIM905 - a word list reads better as text

# Words in a key's name that suggest it could change attention: an unknown key containing one
# of them is refused rather than ignored.
ATTENTION_WORDS = re.compile(
    r"attn|attention|head|rope|rotary|window|chunk|scal|softcap|bias|norm|qk|query|key|"
    r"value|position|alibi|sink|kv|causal|mask|clip|latent|lora|gate|temperature|layer_type",
    re.IGNORECASE)


class Config:
    """``config.json`` as a mapping, remembering which keys the parts read.

    Nested sections (MPT's ``attn_config``) are flattened to ``section.key`` so every key is
    classified the same way.
    """

    def __init__(self, data: dict[str, Any], path: str):
        self.data = data
        self.path = path
        self.flat: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict) and k in NESTED_SECTIONS:
                for k2, v2 in v.items():
                    self.flat[f"{k}.{k2}"] = v2
            else:
                self.flat[k] = v

    @property
    def model_type(self) -> str:
        mt = self.data.get("model_type")
        if not isinstance(mt, str) or not mt:
            raise HFImportError(f"{self.path}: config.json has no 'model_type'",
                                hint="was it written by transformers' save_pretrained?")
        return mt

    def __contains__(self, key: str) -> bool:
        return key in self.flat

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (``section.key`` for nested ones); ``default`` when absent
        or null."""
        v = self.flat.get(key)
        return default if v is None else v

    def int(self, key: str, default: int | None = None, module: str = "") -> int:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise HFImportError(f"{self.where(module)}config key '{key}' must be a positive "
                                f"integer, got {v!r}")
        return v

    def number(self, key: str, default: float | None = None, module: str = "") -> float:
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise HFImportError(f"{self.where(module)}config key '{key}' must be a positive "
                                f"number, got {v!r}")
        return float(v)

    def where(self, module: str = "") -> str:
        return f"{self.path}: " + (f"module '{module}': " if module else "")


# sections of config.json whose keys are classified one by one
NESTED_SECTIONS = ("attn_config",)


def read_config(model_dir: str | Path) -> Config:
    """``MODEL_DIR/config.json``, parsed (JSON with duplicate keys or NaN constants is
    refused)."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise HFImportError(f"cannot import '{model_dir}': not a folder",
                            hint="give the folder save_pretrained wrote (config.json and "
                            "model.safetensors); nothing is downloaded")
    if not path.is_file():
        raise HFImportError(f"cannot import '{model_dir}': it has no config.json",
                            hint="give the folder save_pretrained wrote; nothing is downloaded")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise HFImportError(f"{path}: over the {MAX_CONFIG_BYTES}-byte limit for a config")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise HFImportError(f"{path}: the key '{k}' appears twice")
            out[k] = v
        return out

    def no_constant(word: str) -> None:
        raise HFImportError(f"{path}: '{word}' is not JSON")

    try:
        data = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=pairs,
                          parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise HFImportError(f"{path}: not UTF-8 JSON ({err})") from None
    if not isinstance(data, dict):
        raise HFImportError(f"{path}: expected a JSON object")
    return Config(data, str(path))


def classify_keys(cfg: Config, attention: Iterable[str], harmless: Iterable[str],
                  model_type: str) -> list[str]:
    """Check every key of ``cfg`` against the tables; raise for an unknown key that could
    change attention; return notes for the other unknown keys."""
    attention = set(attention)
    known = attention | set(harmless) | COMMON_HARMLESS
    notes = []
    for key in cfg.flat:
        if key in known:
            continue
        if ATTENTION_WORDS.search(key):
            hint = did_you_mean(key, sorted(attention))
            raise HFImportError(
                f"{cfg.where()}config key '{key}' (model_type '{model_type}') is not in "
                "the importer's tables and could change attention; it is refused rather "
                "than ignored",
                hint=hint or "if it is harmless, add it to the architecture's harmless keys "
                "in attndsl/importers/hf/architectures.py")
        notes.append(f"config key '{key}' is not in the importer's tables; its name says "
                     "nothing of attention, so it is taken as harmless")
    return notes
