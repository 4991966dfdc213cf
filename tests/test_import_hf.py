"""``attndsl import-hf`` against transformers itself, module by module.

For every supported architecture a tiny random model is built from a config made here
(hidden 64, 2-3 layers, windows small enough that masks matter, every parameter redrawn:
non-zero biases and norm weights), saved with ``save_pretrained``, and run once per sequence
length (1, 7, 33; batch 2) with forward hooks capturing what each attention module receives
and returns (eager attention). Each module is imported alone (``module=``), compiled and run
in ONNX Runtime on the captured input: the output must equal the captured one within 1e-5
(fp32). The all-modules spec compiles and runs too, and survives ``convert`` to ``.attn``
and back; a cached decode equals the full run. Errors name the key, parameter or feature.
Run with ``-s`` for the table of max errors per architecture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from helpers import ErrorReport  # noqa: E402

import attndsl  # noqa: E402
from attndsl import api  # noqa: E402
from attndsl.cli import main  # noqa: E402
from attndsl.importers.hf import (  # noqa: E402
    ARCHITECTURES,
    PENDING,
    SUPPORTED,
    HFImportError,
    import_checkpoint,
)
from attndsl.importers.hf.config import COMMON_HARMLESS  # noqa: E402
from attndsl.importers.hf.parts import bloom_slopes, mpt_slopes  # noqa: E402
from attndsl.runtime import make_session, run_session  # noqa: E402
from attndsl.runtime.decode import decode_loop, stitch  # noqa: E402
from attndsl.safetensors_io import write_safetensors  # noqa: E402

T = transformers
LENGTHS = (1, 7, 33)
TOL = 1e-5
ERRORS = ErrorReport("import-hf, max abs error vs transformers (fp32, seq 1/7/33, batch 2):",
                     width=20)
_report = ERRORS.fixture()

SMALL = {"vocab_size": 50, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
LLAMA = {"hidden_size": 64, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, **SMALL}
NO_KV = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}

# name -> (config class, kwargs, model class, kind); kind: decoder | seq2seq | whisper
CASES: dict[str, tuple] = {
    "llama": ("LlamaConfig", {**LLAMA, "attention_bias": True,
                              "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
              "LlamaForCausalLM", "decoder"),
    "llama_llama3": ("LlamaConfig", {**LLAMA, "max_position_embeddings": 64, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}},
        "LlamaForCausalLM", "decoder"),
    "llama_linear": ("LlamaConfig", {**LLAMA, "rope_parameters": {
        "rope_type": "linear", "rope_theta": 1000.0, "factor": 3.0}},
        "LlamaForCausalLM", "decoder"),
    "llama_dynamic": ("LlamaConfig", {**LLAMA, "max_position_embeddings": 16, "rope_parameters": {
        "rope_type": "dynamic", "rope_theta": 1000.0, "factor": 2.0}},
        "LlamaForCausalLM", "decoder"),
    "llama_yarn": ("LlamaConfig", {**LLAMA, "max_position_embeddings": 64, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0, "beta_fast": 16.0,
        "beta_slow": 2.0, "original_max_position_embeddings": 16}},
        "LlamaForCausalLM", "decoder"),
    "mistral": ("MistralConfig", {**LLAMA, "sliding_window": 5}, "MistralForCausalLM",
                "decoder"),
    "mixtral": ("MixtralConfig", {**LLAMA, "num_key_value_heads": 1, "sliding_window": 6,
                                  "num_local_experts": 2, "num_experts_per_tok": 1},
                "MixtralForCausalLM", "decoder"),
    "qwen2": ("Qwen2Config", {**LLAMA, "num_hidden_layers": 3, "use_sliding_window": True,
                              "max_window_layers": 1, "sliding_window": 5},
              "Qwen2ForCausalLM", "decoder"),
    "gemma": ("GemmaConfig", {**LLAMA, "num_key_value_heads": 1, "head_dim": 24,
                              "attention_bias": True}, "GemmaForCausalLM", "decoder"),
    "gemma2": ("Gemma2Config", {**LLAMA, "num_hidden_layers": 3, "head_dim": 16,
                                "query_pre_attn_scalar": 20, "attn_logit_softcapping": 3.0,
                                "sliding_window": 4}, "Gemma2ForCausalLM", "decoder"),
    "qwen3": ("Qwen3Config", {**LLAMA, "num_hidden_layers": 3, "head_dim": 8,
                              "use_sliding_window": True, "max_window_layers": 1,
                              "sliding_window": 5, "rms_norm_eps": 1e-5},
              "Qwen3ForCausalLM", "decoder"),
    "gemma3_text": ("Gemma3TextConfig", {**LLAMA, "num_hidden_layers": 3, "head_dim": 16,
                                         "query_pre_attn_scalar": 20, "sliding_window": 4,
                                         "layer_types": ["sliding_attention",
                                                         "full_attention",
                                                         "sliding_attention"],
                                         "rope_parameters": {
                                             "full_attention": {"rope_type": "default",
                                                                "rope_theta": 100000.0},
                                             "sliding_attention": {"rope_type": "default",
                                                                   "rope_theta": 100.0}}},
                    "Gemma3ForCausalLM", "decoder"),
    "olmo2": ("Olmo2Config", {**LLAMA}, "Olmo2ForCausalLM", "decoder"),
    "gpt_oss": ("GptOssConfig", {**LLAMA, "num_hidden_layers": 3, "num_local_experts": 2,
                                 "num_experts_per_tok": 1, "head_dim": 16, "sliding_window": 4,
                                 "max_position_embeddings": 256, "rope_parameters": {
                                     "rope_type": "yarn", "rope_theta": 1000.0, "factor": 8.0,
                                     "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                                     "original_max_position_embeddings": 32}},
                "GptOssForCausalLM", "decoder"),
    "diffllama": ("DiffLlamaConfig", {**LLAMA, "num_hidden_layers": 3, "lambda_std_dev": 0.3},
                  "DiffLlamaForCausalLM", "decoder"),
    "deepseek_v3": ("DeepseekV3Config", {
        **LLAMA, "num_key_value_heads": 4, "kv_lora_rank": 16, "q_lora_rank": 16,
        "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 12, "n_routed_experts": 2,
        "num_experts_per_tok": 1, "moe_intermediate_size": 16, "first_k_dense_replace": 2,
        "n_group": 1, "topk_group": 1, "max_position_embeddings": 256, "rope_parameters": {
            "rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0, "mscale": 1.0,
            "mscale_all_dim": 0.7, "beta_fast": 32.0, "beta_slow": 1.0,
            "original_max_position_embeddings": 64}}, "DeepseekV3ForCausalLM", "decoder"),
    "deepseek_v3_q": ("DeepseekV3Config", {
        **LLAMA, "num_key_value_heads": 4, "kv_lora_rank": 16, "q_lora_rank": None,
        "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 2,
        "num_experts_per_tok": 1, "moe_intermediate_size": 16, "first_k_dense_replace": 2,
        "n_group": 1, "topk_group": 1, "rope_interleave": False}, "DeepseekV3ForCausalLM",
        "decoder"),
    "qwen3_next": ("Qwen3NextConfig", {
        **LLAMA, "num_hidden_layers": 4, "head_dim": 16, "num_experts": 2, "num_experts_per_tok": 1,
        "moe_intermediate_size": 16, "shared_expert_intermediate_size": 16,
        "linear_num_value_heads": 2, "linear_num_key_heads": 2, "linear_key_head_dim": 8,
        "linear_value_head_dim": 8, "rope_parameters": {
            "rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.25}},
        "Qwen3NextForCausalLM", "decoder"),
    "llama4_text": ("Llama4TextConfig", {
        **LLAMA, "num_hidden_layers": 4, "intermediate_size_mlp": 32, "head_dim": 16,
        "num_local_experts": 2, "attention_chunk_size": 8, "no_rope_layers": [1, 1, 1, 0],
        "attn_temperature_tuning": True, "floor_scale": 4, "attn_scale": 0.5,
        "use_qk_norm": True, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
        "Llama4ForCausalLM", "decoder"),
    "granite": ("GraniteConfig", {**LLAMA, "attention_multiplier": 0.3},
                "GraniteForCausalLM", "decoder"),
    "olmo": ("OlmoConfig", {**LLAMA, "clip_qkv": 0.4}, "OlmoForCausalLM", "decoder"),
    "phi": ("PhiConfig", {**LLAMA, "num_key_value_heads": 4,
                          "rope_parameters": {"rope_type": "default", "rope_theta": 100.0,
                                              "partial_rotary_factor": 0.5}},
            "PhiForCausalLM", "decoder"),
    "phi_qk_layernorm": ("PhiConfig", {**LLAMA, "num_key_value_heads": 4, "qk_layernorm": True,
                                       "rope_parameters": {"rope_type": "default",
                                                           "rope_theta": 100.0,
                                                           "partial_rotary_factor": 0.5}},
                         "PhiForCausalLM", "decoder"),
    "phi3": ("Phi3Config", {**LLAMA, "sliding_window": 6}, "Phi3ForCausalLM", "decoder"),
    "phi3_longrope": ("Phi3Config", {
        **LLAMA, "sliding_window": 6, "max_position_embeddings": 64,
        "original_max_position_embeddings": 16, "rope_parameters": {
            "rope_type": "longrope", "rope_theta": 1000.0,
            "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
            "long_factor": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0],
            "original_max_position_embeddings": 16}},
        "Phi3ForCausalLM", "decoder"),
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_head": 4, "n_layer": 2,
                            "scale_attn_by_inverse_layer_idx": True, **SMALL},
             "GPT2LMHeadModel", "decoder"),
    "gptj": ("GPTJConfig", {"n_embd": 64, "n_head": 4, "n_layer": 2, "rotary_dim": 8,
                            **SMALL}, "GPTJForCausalLM", "decoder"),
    "gpt_neox": ("GPTNeoXConfig", {**NO_KV, "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}},
        "GPTNeoXForCausalLM", "decoder"),
    "falcon_new": ("FalconConfig", {"hidden_size": 64, "num_attention_heads": 4,
                                    "num_hidden_layers": 2, "new_decoder_architecture": True,
                                    "num_kv_heads": 2, "bias": True, **SMALL},
                   "FalconForCausalLM", "decoder"),
    "falcon_mq": ("FalconConfig", {"hidden_size": 64, "num_attention_heads": 4,
                                   "num_hidden_layers": 2, "multi_query": True, **SMALL},
                  "FalconForCausalLM", "decoder"),
    "falcon_mha": ("FalconConfig", {"hidden_size": 64, "num_attention_heads": 4,
                                    "num_hidden_layers": 2, "multi_query": False,
                                    "bias": True, **SMALL}, "FalconForCausalLM", "decoder"),
    "bloom": ("BloomConfig", {"hidden_size": 64, "n_head": 4, "n_layer": 2, **SMALL},
              "BloomForCausalLM", "decoder"),
    "bloom_6heads": ("BloomConfig", {"hidden_size": 48, "n_head": 6, "n_layer": 2, **SMALL},
                     "BloomForCausalLM", "decoder"),
    "mpt": ("MptConfig", {"d_model": 64, "n_heads": 4, "n_layers": 2, "expansion_ratio": 1,
                          "max_seq_len": 64, **SMALL}, "MptForCausalLM", "decoder"),
    "mpt_clip": ("MptConfig", {"d_model": 64, "n_heads": 4, "n_layers": 2, "expansion_ratio": 1,
                               "max_seq_len": 64, "attn_config": {"clip_qkv": 0.3}, **SMALL},
                 "MptForCausalLM", "decoder"),
    "t5": ("T5Config", {"d_model": 64, "d_kv": 8, "d_ff": 32, "num_heads": 4, "num_layers": 2,
                        "num_decoder_layers": 2, "relative_attention_num_buckets": 8,
                        "relative_attention_max_distance": 16, "decoder_start_token_id": 0,
                        **SMALL}, "T5ForConditionalGeneration", "seq2seq"),
    "bart": ("BartConfig", {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
                            "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                            "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
                            "max_position_embeddings": 64, **SMALL},
             "BartForConditionalGeneration", "seq2seq"),
    "whisper": ("WhisperConfig", {"d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
                                  "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                                  "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
                                  "num_mel_bins": 8, "max_source_positions": 12,
                                  "max_target_positions": 40, "decoder_start_token_id": 1,
                                  **SMALL}, "WhisperForConditionalGeneration", "whisper"),
}


def _randomize(model) -> None:
    """Redraw every parameter: norm weights in [0.5, 1.5] (Gemma's ``1 + w`` too), biases
    and matrices small random values (non-zero), so that every part of every module is
    exercised."""
    g = torch.Generator().manual_seed(0)
    gemma = model.config.model_type.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "ln" in name.split(".")[-2]):
                p.copy_(torch.rand(p.shape, generator=g) + (-0.5 if gemma else 0.5))
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "embed" in name or "wte" in name or "wpe" in name or "shared" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def _attention_modules(model) -> list[str]:
    """The attention modules, found independently of the importer: modules whose class name
    ends in 'Attention' without such a module inside (T5LayerSelfAttention holds
    T5Attention)."""
    out = []
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("Attention") and not any(
                type(c).__name__.endswith("Attention") for c in mod.modules() if c is not mod):
            out.append(name)
    return out


class Built:
    def __init__(self, case: str, root: Path):
        cfg_cls, kwargs, model_cls, self.kind = CASES[case]
        torch.manual_seed(0)
        cfg = getattr(T, cfg_cls)(**kwargs)
        self.model = getattr(T, model_cls)._from_config(cfg, attn_implementation="eager")
        _randomize(self.model)
        self.model.eval()
        self.dir = root / case
        self.model.save_pretrained(self.dir)
        self.modules = _attention_modules(self.model)
        self.captures = {n: self.capture(n) for n in LENGTHS}

    def capture(self, n: int) -> dict[str, dict[str, np.ndarray]]:
        """Run the model on batch 2, length n; what each attention module got and gave."""
        got: dict[str, dict[str, np.ndarray]] = {}
        hooks = []
        for path in self.modules:
            mod = self.model.get_submodule(path)

            def hook(mod, args, kwargs, out, path=path):
                x = kwargs.get("hidden_states", args[0] if args else None)
                rec = {"x": x.detach().numpy().copy(),
                       "y": (out[0] if isinstance(out, tuple) else out).detach().numpy().copy()}
                kv = kwargs.get("key_value_states")
                if kv is not None:
                    rec["kv"] = kv.detach().numpy().copy()
                if type(mod).__name__ == "BloomAttention":  # it adds its residual input
                    residual = kwargs.get("residual", args[1] if len(args) > 1 else None)
                    rec["y"] = rec["y"] - residual.detach().numpy()
                got[path] = rec

            hooks.append(mod.register_forward_hook(hook, with_kwargs=True))
        gen = torch.Generator().manual_seed(n)
        ids = torch.randint(3, 50, (2, n), generator=gen)
        try:
            with torch.no_grad():
                if self.kind == "decoder":
                    self.model(input_ids=ids, use_cache=False)
                elif self.kind == "seq2seq":
                    src = torch.randint(3, 50, (2, n + 3), generator=gen)
                    self.model(input_ids=src, decoder_input_ids=ids, use_cache=False)
                else:
                    c = self.model.config
                    feats = torch.randn(2, c.num_mel_bins, 2 * c.max_source_positions,
                                        generator=gen)
                    self.model(input_features=feats, decoder_input_ids=ids, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        return got


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    cache: dict[str, Built] = {}

    def get(case: str) -> Built:
        if case not in cache:
            cache[case] = Built(case, root)
        return cache[case]

    return get


def _run(spec, weights, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    session = make_session(api.compile(spec, weights=weights))
    return [run_session(session, f) for f in feeds]


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_module_matches_transformers(built, case):
    b = built(case)
    imported = import_checkpoint(b.dir)
    assert [blk.module for blk in imported.blocks] == b.modules, \
        "the importer's modules, in model order, are the model's attention modules"
    for path in b.modules:
        spec, weights = attndsl.import_hf(b.dir, module=path)
        assert list(spec.outputs) == ["y"]
        feeds = []
        for n in LENGTHS:
            rec = b.captures[n][path]
            feed = {"x": rec["x"]}
            if "kv" in rec:
                feed["kv"] = rec["kv"]
            feeds.append(feed)
        for n, out in zip(LENGTHS, _run(spec, weights, feeds), strict=True):
            want = b.captures[n][path]["y"]
            err = float(np.max(np.abs(out["y"] - want)))
            ERRORS.record(case, err)
            assert err <= TOL, f"{case} {path} seq {n}: max abs error {err:.3g}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_all_modules_spec_runs_and_converts(built, case, tmp_path):
    b = built(case)
    spec, weights = attndsl.import_hf(b.dir)
    imported = import_checkpoint(b.dir)
    # one run with every module's captured input, at length 7
    rec = b.captures[7]
    feed = {}
    for blk in imported.blocks:
        feed[blk.settings["query"]] = rec[blk.module]["x"]
        if "key_value" in blk.settings:
            feed[blk.settings["key_value"]] = rec[blk.module]["kv"]
    (out,) = _run(spec, weights, [feed])
    for blk in imported.blocks:
        err = float(np.max(np.abs(out[f"{blk.name}_y"] - rec[blk.module]["y"])))
        assert err <= TOL, f"{case} {blk.module}: {err:.3g}"
    # YAML -> .attn -> YAML: the same spec
    attn = api.Spec.parse(spec.to_attn(), "attn")
    assert attn == spec
    assert api.Spec.parse(attn.to_yaml(), "yaml") == spec


def test_cached_decode_equals_full_run(built):
    """Gemma 2 (sliding window 4, softcap): prefill 3 tokens, then one at a time."""
    b = built("gemma2")
    for path in b.modules:
        spec, weights = attndsl.import_hf(b.dir, module=path)
        spec = spec.with_block(spec.blocks[0], cache=True)
        model = spec.model()
        rec = b.captures[33][path]
        run = decode_loop(model, api.compile(spec, weights=weights), {"x": rec["x"]}, 3)
        stitched = stitch(model, run)
        assert np.max(np.abs(stitched["y"] - run.full["y"])) <= TOL
        assert np.max(np.abs(stitched["y"] - rec["y"])) <= TOL


def test_command_line_writes_spec_and_weights(built, tmp_path, capsys):
    b = built("gemma2")
    out = tmp_path / "g.attn"
    assert main(["import-hf", str(b.dir), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# imported by attndsl import-hf")
    assert "# checkpoint module model.layers.1.self_attn" in text
    assert 'weights "g.safetensors"' in text
    assert "softcap(3.0)" in text and "sliding(4)" in text
    model = api.load_spec(out)
    assert [blk.name for blk in model.blocks] == ["layer0", "layer1", "layer2"]
    with _single(tmp_path / "g.safetensors") as f:
        assert "layer0.q_proj.weight" in f.names()
    # YAML by suffix, one module; the run uses the weights file the spec names
    yml = tmp_path / "one.yaml"
    assert main(["import-hf", str(b.dir), "-o", str(yml), "--module",
                 "model.layers.2.self_attn"]) == 0
    assert "  # checkpoint module model.layers.2.self_attn" in yml.read_text()
    rec = b.captures[7]["model.layers.2.self_attn"]
    got = api.run(yml, {"x": rec["x"]})
    assert np.max(np.abs(got["y"] - rec["y"])) <= TOL
    # --format attn wins over the suffix; convert round trip of the written files
    assert main(["import-hf", str(b.dir), "-o", str(tmp_path / "f.spec"),
                 "--format", "attn"]) == 0
    assert (tmp_path / "f.spec").read_text().count("block layer") == 3
    assert api.Spec.load(tmp_path / "f.spec").syntax == "attn"
    assert main(["import-hf", str(b.dir), "-o", str(tmp_path / "f.yaml"),
                 "--format", "attn"]) == 2
    assert "--format attn" in capsys.readouterr().err
    assert main(["convert", str(out), "-o", str(tmp_path / "back.yaml")]) == 0
    assert api.Spec.load(tmp_path / "back.yaml") == api.Spec.load(out)


def _single(path: Path):
    from attndsl.safetensors_io import open_safetensors

    return open_safetensors(path)


def test_block_features_in_the_imported_specs(built):
    """What each architecture's parts put in the spec: per-projection biases, not zero ones,
    and the block features with their settings."""
    def block(case: str, name: str = "layer0") -> dict:
        return attndsl.import_hf(built(case).dir)[0].block(name)

    assert block("qwen2")["bias"] == {"q": True, "k": True, "v": True}
    assert block("whisper", "encoder0")["bias"] == {"q": True, "v": True, "o": True}
    assert block("llama")["bias"] is True
    assert block("qwen3")["qk_norm"] == {"kind": "rms", "eps": 1e-5}
    assert block("gemma3_text")["qk_norm"]["offset"] == 1.0
    assert block("olmo2")["qk_norm"]["scope"] == "width"
    assert block("olmo")["clip_qkv"] == 0.4
    assert block("gpt_oss")["sinks"] == "learned"
    assert block("diffllama", "layer2")["diff"]["layer"] == 2
    llama4 = attndsl.import_hf(built("llama4_text").dir)[0]
    assert llama4.block("layer0")["qk_norm"]["after_rope"] is True
    assert "chunk(8)" in llama4.block("layer0")["mask"]
    assert "rope" not in llama4.block("layer3") and "qk_norm" not in llama4.block("layer3")
    assert llama4.block("layer3")["temperature_tuning"] == {"attn_scale": 0.5, "floor_scale": 4}


def test_linear_attention_layers_are_named(built):
    """Qwen3-Next's linear-attention layers are not softmax attention: skipped, and named
    as such when asked for."""
    b = built("qwen3_next")
    assert [blk.module for blk in import_checkpoint(b.dir).blocks] == ["model.layers.3.self_attn"]
    msg = _error(b.dir, module="model.layers.0.linear_attn")
    assert "it is a linear-attention layer" in msg


def test_failed_import_leaves_existing_output(built, tmp_path, capsys):
    b = built("llama")
    out = tmp_path / "keep.yaml"
    out.write_text("old\n")
    (tmp_path / "keep.safetensors").write_bytes(b"old")
    code = main(["import-hf", str(b.dir), "-o", str(out), "--module", "model.layers.9.attn"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no attention module 'model.layers.9.attn'" in err
    assert out.read_text() == "old\n" and (tmp_path / "keep.safetensors").read_bytes() == b"old"


# ------------------------------------------------------------------ refusals


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _error(path, module=None) -> str:
    with pytest.raises(HFImportError) as e:
        attndsl.import_hf(path, module=module)
    return str(e.value)


def test_unknown_model_type_lists_supported(built, tmp_path):
    d = _edit_config(built("llama").dir, tmp_path / "m", model_type="lamma")
    msg = _error(d)
    assert "model_type 'lamma' is not supported" in msg and "did you mean 'llama'" in msg
    assert "supported: bart, bloom" in msg


def test_rope_scaling_maps_to_the_rope_feature(built, tmp_path):
    """transformers' rope_parameters become the rope feature's scaling options (the model
    config's max_position_embeddings for the types that read it); bad values are refused."""
    spec = attndsl.import_hf(built("llama_llama3").dir)[0]
    assert spec.block("layer0")["rope"] == {
        "theta": 5000.0, "scaling": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
        "max_position_embeddings": 64}
    assert spec.block("layer0")["rope"] == attndsl.import_hf(built("llama_llama3").dir)[0] \
        .block("layer1")["rope"]
    d = _edit_config(built("llama").dir, tmp_path / "m", rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 0.5,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8})
    assert "rope scaling ('rope_parameters.factor')" in _error(d)
    d = _edit_config(built("llama").dir, tmp_path / "u", rope_parameters={
        "rope_type": "ntk_by_parts", "rope_theta": 10.0})
    assert "rope_type 'ntk_by_parts'" in _error(d)
    d = _edit_config(built("llama").dir, tmp_path / "x", rope_parameters={
        "rope_type": "linear", "rope_theta": 10.0, "factor": 2.0, "beta_fast": 3.0})
    assert "rope parameter 'beta_fast' is not used by the linear rope type" in _error(d)


def test_older_config_keys_import_the_same(built, tmp_path):
    """Configs written before transformers 5 name RoPE differently (``rope_theta``,
    ``rope_scaling``; GPT-NeoX's ``rotary_emb_base``, ``rotary_pct``) and have no
    ``layer_types``: same spec."""
    def spec(d: Path) -> api.Spec:
        return attndsl.import_hf(d)[0].with_settings(name="m")

    b = built("llama")
    d = _edit_config(b.dir, tmp_path / "l", rope_parameters=None, rope_theta=500.0)
    assert spec(d) == spec(b.dir)
    assert spec(d).block("layer0")["rope"] == {"theta": 500.0}
    b = built("gpt_neox")
    d = _edit_config(b.dir, tmp_path / "n", rope_parameters=None, rotary_emb_base=10000.0,
                     rotary_pct=0.25)
    assert spec(d) == spec(b.dir)
    assert spec(d).block("layer0")["rope"] == {"theta": 10000.0, "dim": 4}
    # without layer_types, the default of the architecture's config class
    for case in ("gemma2", "qwen2"):
        b = built(case)
        d = _edit_config(b.dir, tmp_path / case, layer_types=None)
        assert spec(d) == spec(b.dir), case
        masks = [spec(d).block(x).get("mask") for x in spec(d).blocks]
        assert "causal" in masks and any("sliding" in m for m in masks), case
    # Qwen2 with use_sliding_window false: no window, whatever layer_types says
    d = _edit_config(built("qwen2").dir, tmp_path / "q_off", use_sliding_window=False)
    assert {spec(d).block(x)["mask"] for x in spec(d).blocks} == {"causal"}


def test_unknown_attention_key_is_refused_and_harmless_one_noted(built, tmp_path):
    d = _edit_config(built("llama").dir, tmp_path / "a", attn_logit_scaling=2.0)
    msg = _error(d)
    assert "config key 'attn_logit_scaling'" in msg and "could change attention" in msg
    d = _edit_config(built("llama").dir, tmp_path / "b", favourite_colour="blue")
    r = api.import_hf_to(d, tmp_path / "b.yaml")
    assert any("favourite_colour" in n for n in r.notes)


def test_key_values_it_cannot_express_are_refused(built, tmp_path):
    d = _edit_config(built("olmo").dir, tmp_path / "o", clip_qkv=-8.0)
    msg = _error(d)
    assert "config key 'clip_qkv' must be a positive number, got -8.0" in msg
    assert "model.layers.0.self_attn" in msg
    d = _edit_config(built("falcon_mha").dir, tmp_path / "f", alibi=True)
    assert "config key 'alibi' = True needs ALiBi added before" in _error(d)
    d = _edit_config(built("gemma2").dir, tmp_path / "g", use_bidirectional_attention=True)
    assert "use_bidirectional_attention" in _error(d)


def test_parameter_it_cannot_place_is_named(built, tmp_path):
    src = built("llama").dir
    d = tmp_path / "extra"
    shutil.copytree(src, d)
    with _single(d / "model.safetensors") as f:
        tensors = {n: f.read(n) for n in f.names()}
    tensors["model.layers.1.self_attn.rel_table.weight"] = np.ones((4, 4), np.float32)
    write_safetensors(d / "model.safetensors", tensors)
    msg = _error(d, module="model.layers.1.self_attn")
    assert "parameter 'model.layers.1.self_attn.rel_table.weight' cannot be placed" in msg


def test_pickle_checkpoints_are_not_read(tmp_path, built):
    d = tmp_path / "pt"
    d.mkdir()
    shutil.copy(built("llama").dir / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(attndsl.AttnDSLError, match="pytorch_model.bin"):
        attndsl.import_hf(d)


# ------------------------------------------------------------------ tables and slopes


@pytest.mark.parametrize("arch", SUPPORTED)
def test_every_default_config_key_is_in_a_table(arch):
    """Each supported architecture's default config (transformers 5.23.0) has no key outside
    the importer's tables, and no key is both an attention key and a harmless one."""
    a = ARCHITECTURES[arch]
    cfg = T.AutoConfig.for_model(arch).to_dict()
    flat = set()
    for k, v in cfg.items():
        if isinstance(v, dict) and k == "attn_config":
            flat |= {f"{k}.{k2}" for k2 in v if k2 not in COMMON_HARMLESS}
        else:
            flat.add(k)
    unknown = sorted(flat - a.keys - a.harmless - COMMON_HARMLESS)
    assert not unknown, f"{arch}: keys in neither table: {unknown}"
    assert not (a.keys & (a.harmless | COMMON_HARMLESS)), arch


def test_pending_and_supported_are_declared():
    assert set(PENDING) | set(SUPPORTED) == set(ARCHITECTURES)
    for name in ("llama", "mistral", "mixtral", "gemma", "gemma2", "gpt2", "gpt_neox", "gptj",
                 "falcon", "bloom", "mpt", "phi", "t5", "bart", "whisper", "qwen2"):
        assert name in SUPPORTED


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 5, 6, 8, 12, 16])
def test_alibi_slopes_of_the_architectures(heads):
    """BLOOM's slopes are the spec language's for every head count; MPT's for powers of two
    (other counts are refused by the importer)."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    from attndsl.features.scores.alibi import alibi_slopes

    want = _get_alibi_slopes(heads, torch.device("cpu")).double().numpy()
    np.testing.assert_allclose(bloom_slopes(heads), want, rtol=1e-6)
    np.testing.assert_allclose(alibi_slopes(heads), want, rtol=1e-6)
    if heads & (heads - 1) == 0:
        np.testing.assert_allclose(mpt_slopes(heads), alibi_slopes(heads), rtol=1e-12)


def test_readme_flow_on_the_tiny_checkpoint_script(tmp_path, capsys):
    """The README's commands: the repository's script writes a tiny Gemma 2, import-hf turns
    it into a spec and weights, and `run --verify` passes on it."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "make_tiny_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_tiny_checkpoint", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["gemma2", str(tmp_path / "tiny-gemma2")]) == 0
    out = tmp_path / "gemma2.yaml"
    assert main(["import-hf", str(tmp_path / "tiny-gemma2"), "-o", str(out)]) == 0
    assert main(["run", str(out), "--verify"]) == 0
    text = out.read_text()
    assert "# checkpoint module model.layers.0.self_attn" in text
    assert "softcap(3.0)" in text and "causal & sliding(4)" in text


def test_sharded_checkpoint_without_torch_or_transformers(built, tmp_path):
    """A sharded checkpoint imports in a process where torch and transformers cannot be
    imported at all."""
    import os
    import subprocess
    import sys

    b = built("llama")
    d = tmp_path / "sharded"
    b.model.save_pretrained(d, max_shard_size="40KB")
    assert (d / "model.safetensors.index.json").exists()
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['transformers'] = None\n"
        "sys.modules['safetensors'] = None\n"
        "import attndsl\n"
        f"spec, w = attndsl.import_hf({str(d)!r}, module='model.layers.1.self_attn')\n"
        "print(len(w), spec.blocks)\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8 ('layer1',)"
    spec, weights = attndsl.import_hf(d, module="model.layers.1.self_attn")
    rec = b.captures[7]["model.layers.1.self_attn"]
    (got,) = _run(spec, weights, [{"x": rec["x"]}])
    assert np.max(np.abs(got["y"] - rec["y"])) <= TOL
