"""Write a tiny random Hugging Face checkpoint to import with ``attndsl import-hf``.

    python tools/make_tiny_checkpoint.py gemma2 /tmp/tiny-gemma2
    attndsl import-hf /tmp/tiny-gemma2 -o gemma2.yaml

Needs torch and transformers (the test extra); ``attndsl import-hf`` itself needs neither.
The models are those of ``tests/test_import_hf.py``: hidden 64, a few layers, windows small
enough that masks matter, every parameter redrawn from a fixed seed. Written with
``save_pretrained`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import argparse
import sys

SMALL = {"vocab_size": 50, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
         "hidden_size": 64, "intermediate_size": 32, "num_attention_heads": 4,
         "num_key_value_heads": 2}
MODELS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              {**SMALL, "num_hidden_layers": 2, "attention_bias": True}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               {**SMALL, "num_hidden_layers": 3, "head_dim": 16, "query_pre_attn_scalar": 20,
                "attn_logit_softcapping": 3.0, "sliding_window": 4}),
}


def make(kind: str, out: str, seed: int = 0) -> None:
    """Build the tiny ``kind`` model (a key of MODELS) and save it to folder ``out``."""
    import torch
    import transformers

    cfg_cls, model_cls, kwargs = MODELS[kind]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_cls)(**kwargs)
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation="eager")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial weights: biases and norms are not left at 0 / 1
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else 0.15))
    model.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=sorted(MODELS))
    p.add_argument("out", help="folder to write (config.json, model.safetensors)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    make(args.kind, args.out, args.seed)
    print(f"wrote a tiny {args.kind} checkpoint to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
