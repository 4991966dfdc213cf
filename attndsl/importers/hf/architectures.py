"""The architectures the importer knows: each a small declaration composing parts.

To add an architecture whose attention is built from known parts, declare it here: where its
attention modules are (``Stack``: a path template and the config key of the layer count),
its sizes, projection layout, RoPE, mask, score modifiers and scale, and its harmless config
keys (``tests/test_import_hf.py`` checks that every key of its default config is in a table).
Block features (``qk_norm``, ``sinks``, ``clip_qkv``, ...) come from ``features`` parts. An
architecture that needs a feature the spec language lacks declares it in ``needs``: the
import then stops with an error naming the feature and the config key or parameter;
``PENDING`` lists architectures that cannot import at all yet (none at present).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .parts import (
    MLA,
    Alibi,
    CausalMask,
    ClipQKV,
    Conv1DFused,
    Ctx,
    Diff,
    Geometry,
    GPT2Scale,
    GroupFused,
    HeadDimScale,
    HeadFused,
    KeyScale,
    MLAProjection,
    Needs,
    NoMask,
    NoScale,
    OutputGate,
    QKNorm,
    QueryPreAttnScalar,
    Rope,
    Separate,
    Sinks,
    Sizes,
    Softcap,
    Stacked,
    T5RelativeBias,
    TemperatureTuning,
    mla_geometry,
)


@dataclass(frozen=True)
class Stack:
    """The attention modules of one kind, one per layer: ``template`` is the module path
    relative to the model's root with ``{i}`` for the layer; ``count`` the config key of the
    number of layers (``count_default``: a key to fall back on when it is null, T5's
    ``num_decoder_layers``). ``name`` prefixes the block names; ``cross``: the module reads
    the encoder's states as keys and values; ``order``: (group, sub) sort key for model order
    (all of a group's layers, layer by layer, ``sub`` within a layer)."""

    name: str
    template: str
    count: str
    mask: Any
    sizes: Sizes
    rope: Rope | None = None
    scores: tuple[Any, ...] = ()
    cross: bool = False
    encoder: bool = False
    order: tuple[int, int] = (0, 0)
    count_default: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        out = [self.count, *self.sizes.keys, *self.mask.keys]
        if self.count_default:
            out.append(self.count_default)
        if self.rope:
            out += self.rope.keys
        for s in self.scores:
            out += s.keys
        return tuple(out)


@dataclass(frozen=True)
class Architecture:
    """One ``model_type``. ``projection`` is a part, or a function of the config choosing one
    (Falcon); ``attention_keys`` are read by the architecture itself (not by a part), with
    ``check_keys`` refusing values it cannot express; ``module_adds_residual``: the module's
    output includes a residual argument it receives (BLOOM), which the spec leaves out;
    ``sizes_hook`` adjusts the sizes from the config (Falcon's kv heads); ``features``: parts
    adding block features (``QKNorm``, ...) after the others, each ``apply(ctx, geometry,
    settings)`` giving settings and arrays."""

    model_type: str
    stacks: tuple[Stack, ...]
    projection: Any
    scale: Any = HeadDimScale()
    harmless: frozenset[str] = frozenset()
    needs: tuple[Needs, ...] = ()
    attention_keys: tuple[str, ...] = ()
    check_keys: Any = None
    module_adds_residual: bool = False
    sizes_hook: Any = None
    features: tuple[Any, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        out = set(self.attention_keys) | set(self.scale.keys)
        for s in self.stacks:
            out |= set(s.keys)
        for n in (*self.needs, *self.features):
            out |= set(n.keys)
        return frozenset(out)

    def projection_for(self, ctx: Ctx) -> Any:
        return self.projection(ctx) if callable(self.projection) else self.projection

    def geometry(self, stack: Stack, ctx: Ctx) -> Geometry:
        g = stack.sizes.geometry(ctx)
        return self.sizes_hook(ctx, g) if self.sizes_hook else g


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DECODER = "layers.{i}.self_attn"
LLAMA_SIZES = Sizes()
ROPE = Rope()
HEAD_DIM_SCALE = HeadDimScale()


def _decoder(template: str = DECODER, count: str = "num_hidden_layers",
             sizes: Sizes = LLAMA_SIZES, rope: Rope | None = ROPE, windows: str = "none",
             scores: tuple[Any, ...] = (), default: str = "full") -> tuple[Stack, ...]:
    return (Stack("layer", template, count, CausalMask(windows, default), sizes, rope,
                  scores),)


def _llama_like(model_type: str, windows: str = "none", default: str = "full",
                harmless: str = "",
                needs: tuple[Needs, ...] = (), scale: Any = HEAD_DIM_SCALE,
                scores: tuple[Any, ...] = (), keys: tuple[str, ...] = ("attention_bias",),
                rope: Rope | None = ROPE, features: tuple[Any, ...] = ()) -> Architecture:
    return Architecture(model_type, _decoder(windows=windows, scores=scores, rope=rope,
                                             default=default),
                        Separate(), scale=scale, harmless=_words("pretraining_tp " + harmless),
                        needs=needs, attention_keys=keys, features=features)


MOE = ("num_local_experts num_experts_per_tok output_router_logits router_aux_loss_coef "
       "router_jitter_noise num_experts moe_intermediate_size norm_topk_prob "
       "decoder_sparse_step mlp_only_layers shared_expert_intermediate_size")


# ------------------------------------------------------------------ Falcon's choices

def _falcon_projection(ctx: Ctx) -> Any:
    if ctx.cfg.get("new_decoder_architecture"):
        return GroupFused()
    if ctx.cfg.get("multi_query", True):
        return Stacked("query_key_value", "dense")
    return HeadFused()


def _falcon_sizes(ctx: Ctx, g: Geometry) -> Geometry:
    cfg = ctx.cfg
    if cfg.get("new_decoder_architecture"):
        kv = cfg.int("num_kv_heads", g.heads, ctx.path)
    elif cfg.get("multi_query", True):
        kv = 1
    else:
        kv = g.heads
    if g.heads % kv:
        raise ctx.error(f"'num_kv_heads' = {kv} does not divide 'num_attention_heads'")
    return Geometry(g.hidden, g.heads, kv, g.head_dim, g.kv_width)


def _gpt2_sizes() -> Sizes:
    return Sizes(hidden="n_embd", heads="n_head", kv_heads=None, head_dim=None)


def _mpt_attn_type(ctx: Ctx) -> None:
    kind = ctx.cfg.get("attn_config.attn_type", "multihead_attention")
    if kind != "multihead_attention":
        raise ctx.error(f"config key 'attn_config.attn_type' = {kind!r}: only "
                        "multihead_attention imports")


# ------------------------------------------------------------------ encoder-decoders

def _enc_dec(enc_t: str, dec_t: str, cross_t: str, enc_n: str, dec_n: str,
             enc_sizes: Sizes, dec_sizes: Sizes, enc_scores: tuple = (),
             dec_scores: tuple = (), dec_count_default: str | None = None) -> tuple[Stack, ...]:
    return (
        Stack("encoder", enc_t, enc_n, NoMask(), enc_sizes, scores=enc_scores, encoder=True,
              order=(0, 0)),
        Stack("decoder", dec_t, dec_n, CausalMask(), dec_sizes, scores=dec_scores,
              order=(1, 0), count_default=dec_count_default),
        Stack("cross", cross_t, dec_n, NoMask(), dec_sizes, cross=True, order=(1, 1),
              count_default=dec_count_default),
    )


_BART_SIZES = (Sizes("d_model", "encoder_attention_heads", None, None),
               Sizes("d_model", "decoder_attention_heads", None, None))
_BART_HARMLESS = ("encoder_ffn_dim decoder_ffn_dim encoder_layerdrop decoder_layerdrop "
                  "scale_embedding is_decoder num_hidden_layers")
_T5_SIZES = Sizes("d_model", "num_heads", None, "d_kv")


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    _llama_like("llama"),
    _llama_like("mistral", windows="all", keys=()),
    _llama_like("mixtral", windows="all", keys=(), harmless=MOE),
    _llama_like("qwen2", windows="layer_types", default="max_window_layers", keys=()),
    _llama_like("gemma", harmless=""),
    _llama_like("gemma2", windows="layer_types", default="alternate",
                scale=QueryPreAttnScalar(),
                scores=(Softcap(),), harmless="final_logit_softcapping"),
    _llama_like("olmo", features=(ClipQKV(),)),
    _llama_like("granite", scale=KeyScale("attention_multiplier"),
                harmless="embedding_multiplier residual_multiplier logits_scaling"),
    Architecture("phi", _decoder(), Separate(o="dense"),
                 features=(QKNorm(kind="layer", when="qk_layernorm", eps_key="layer_norm_eps",
                                  eps_default=1e-5, module="{}_layernorm"),)),
    Architecture("phi3", _decoder(windows="all"), Stacked("qkv_proj", "o_proj"),
                 harmless=_words("original_max_position_embeddings")),
    Architecture("gpt2", (Stack("layer", "h.{i}.attn", "n_layer", CausalMask(),
                                _gpt2_sizes()),),
                 Conv1DFused(), scale=GPT2Scale(),
                 harmless=_words("n_inner n_positions summary_type summary_use_proj "
                                 "summary_activation summary_proj_to_labels "
                                 "summary_first_dropout"),
                 needs=(Needs("importing GPT-2's cross-attention modules (crossattention)",
                              "add_cross_attention"),)),
    Architecture("gptj", (Stack("layer", "h.{i}.attn", "n_layer", CausalMask(),
                                _gpt2_sizes(), Rope(interleaved=True, dim_key="rotary_dim",
                                                    fixed_theta=10000.0)),),
                 Separate(o="out_proj"), harmless=_words("n_inner n_positions")),
    Architecture("gpt_neox", _decoder("layers.{i}.attention",
                                      sizes=Sizes(kv_heads=None, head_dim=None),
                                      rope=Rope(aliases=(("rotary_emb_base", "rope_theta"),
                                                         ("rotary_pct",
                                                          "partial_rotary_factor")))),
                 HeadFused(),
                 attention_keys=("attention_bias",),
                 harmless=_words("use_parallel_residual is_decoder")),
    Architecture("falcon", _decoder("h.{i}.self_attention",
                                    sizes=Sizes(kv_heads=None, head_dim=None)),
                 _falcon_projection, sizes_hook=_falcon_sizes,
                 attention_keys=("bias", "multi_query", "new_decoder_architecture",
                                 "num_kv_heads"),
                 harmless=_words("parallel_attn num_ln_in_parallel_attn ffn_hidden_size"),
                 needs=(Needs("ALiBi added before the 1/sqrt(head_dim) scaling (Falcon's "
                              "alibi: the slopes are scaled too)", "alibi"),)),
    Architecture("bloom", (Stack("layer", "h.{i}.self_attention", "n_layer", CausalMask(),
                                 Sizes("hidden_size", "n_head", None, None),
                                 scores=(Alibi("bloom"),)),),
                 HeadFused(), module_adds_residual=True,
                 harmless=_words("apply_residual_connection_post_layernorm pretraining_tp "
                                 "slow_but_exact")),
    Architecture("mpt", (Stack("layer", "blocks.{i}.attn", "n_layers", CausalMask(),
                               Sizes("d_model", "n_heads", None, None),
                               scores=(Alibi("mpt"),)),),
                 Stacked("Wqkv", "out_proj"), scale=KeyScale("attn_config.softmax_scale"),
                 attention_keys=("attn_config.attn_type",),
                 check_keys=_mpt_attn_type,
                 harmless=_words("expansion_ratio max_seq_len emb_pdrop embedding_fraction "
                                 "init_device learned_pos_emb logit_scale no_bias norm_type "
                                 "attn_config.attn_pdrop attn_config.attn_impl "
                                 "attn_config.attn_uses_sequence_id"),
                 features=(ClipQKV("attn_config.clip_qkv", zero_is_none=True),),
                 needs=(Needs("a QK LayerNorm of MPT's own code (transformers' MptAttention "
                              "does not implement attn_config.qk_ln: nothing to test against)",
                              "attn_config.qk_ln"),
                        Needs("a prefix-LM mask (attn_config.prefix_lm)",
                              "attn_config.prefix_lm"))),
    Architecture("t5", _enc_dec("encoder.block.{i}.layer.0.SelfAttention",
                                "decoder.block.{i}.layer.0.SelfAttention",
                                "decoder.block.{i}.layer.1.EncDecAttention",
                                "num_layers", "num_decoder_layers", _T5_SIZES, _T5_SIZES,
                                (T5RelativeBias(),), (T5RelativeBias(),), "num_layers"),
                 Separate("q", "k", "v", "o"), scale=NoScale(),
                 harmless=_words("d_ff dense_act_fn feed_forward_proj is_gated_act "
                                 "scale_decoder_outputs")),
    Architecture("bart", _enc_dec("encoder.layers.{i}.self_attn", "decoder.layers.{i}.self_attn",
                                  "decoder.layers.{i}.encoder_attn", "encoder_layers",
                                  "decoder_layers", *_BART_SIZES),
                 Separate(o="out_proj"), harmless=_words(_BART_HARMLESS)),
    Architecture("whisper", _enc_dec("encoder.layers.{i}.self_attn",
                                     "decoder.layers.{i}.self_attn",
                                     "decoder.layers.{i}.encoder_attn", "encoder_layers",
                                     "decoder_layers", *_BART_SIZES),
                 Separate(o="out_proj"),
                 harmless=_words(_BART_HARMLESS + " num_mel_bins max_source_positions "
                                 "max_target_positions apply_spec_augment mask_time_prob "
                                 "mask_time_length mask_time_min_masks mask_feature_prob "
                                 "mask_feature_length mask_feature_min_masks "
                                 "median_filter_width use_weighted_layer_sum "
                                 "classifier_proj_size")),
    # ---- architectures using the block features of issue 8 (qk_norm, sinks, rope scaling,
    # mla, diff, output_gate, temperature_tuning)
    _llama_like("qwen3", windows="layer_types", default="max_window_layers",
                features=(QKNorm(),)),
    _llama_like("gemma3_text", windows="layer_types", default="pattern",
                scale=QueryPreAttnScalar(),
                scores=(Softcap(),), features=(QKNorm(offset=1.0),),
                harmless="final_logit_softcapping"),
    _llama_like("olmo2", features=(QKNorm(scope="width"),)),
    _llama_like("gpt_oss", windows="layer_types", default="alternate",
                features=(Sinks(),), harmless=MOE + " swiglu_limit swiglu_alpha"),
    Architecture("qwen3_next", _decoder(windows="layer_types"), Separate(gated=True),
                 features=(QKNorm(offset=1.0), OutputGate()),
                 attention_keys=("attention_bias",),
                 harmless=_words(MOE + " linear_conv_kernel_dim linear_key_head_dim "
                                 "linear_num_key_heads linear_num_value_heads "
                                 "linear_value_head_dim")),
    Architecture("deepseek_v3", _decoder(rope=Rope(dim_key="qk_rope_head_dim")),
                 MLAProjection(), sizes_hook=mla_geometry, features=(MLA(),),
                 attention_keys=("attention_bias",),
                 harmless=_words("pretraining_tp " + MOE + " first_k_dense_replace n_group "
                                 "topk_group n_shared_experts n_routed_experts "
                                 "routed_scaling_factor num_nextn_predict_layers topk_method")),
    _llama_like("llama4_text", windows="layer_types",
                rope=Rope(interleaved=True, nope_key="no_rope_layers"),
                features=(QKNorm(kind="l2", after_rope=True, when="use_qk_norm"),
                          TemperatureTuning()),
                harmless=MOE + " intermediate_size_mlp interleave_moe_layer_step "
                "moe_layers no_rope_layer_interval"),
    _llama_like("diffllama", features=(Diff(),), harmless="lambda_std_dev"),
)}

PENDING: tuple[str, ...] = ()
SUPPORTED = tuple(sorted(set(ARCHITECTURES) - set(PENDING)))

