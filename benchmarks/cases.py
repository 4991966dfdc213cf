"""Benchmark cases: shapes, mask patterns, the attndsl spec of each, inputs, work counts.

Every case is core attention (``project: false``): packed per-head streams q [B, Sq, H*D],
k and v [B, Sk, G*D] in, the attention output [B, Sq, H*D] out. The decode case adds a KV cache
(past_key / past_value [B, G, P, D]) and a single query. The loop case is a generation loop
(Mistral-like: GQA, sliding window, RoPE, KV cache): a prefill over a prompt of ``seq``
positions, then ``new_tokens`` single-position steps, each feeding its present K/V back as the
next step's past; one call runs the whole loop.

The ``mla`` case is a whole DeepSeek-style Multi-head Latent Attention layer decoding one
token (projections included: MLA is a projection scheme): x [B, 1, d_model] and the latent
cache (attn.past_latent [B, P, kv_lora_rank], attn.past_rope [B, P, rope_dim]) in, the
layer's output [B, 1, d_model] out; ``head_dim`` is qk_nope_head_dim = v_head_dim. Its
runners (``benchmarks/mla.py``): attndsl's variants (absorbed: the default with a cache),
the plain form, and attention over a full per-head K/V cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("dense", "causal", "sliding", "bigbird", "decode", "loop", "mla")


@dataclass(frozen=True)
class Case:
    """One benchmark shape. ``seq`` is the sequence length (for ``decode``: the past length;
    for ``loop``: the prompt length, followed by ``new_tokens`` generated positions)."""

    pattern: str
    seq: int
    heads: int = 12
    kv_heads: int = 12
    head_dim: int = 64
    window: int = 256  # sliding(window); BigBird's block size is window // 4
    batch: int = 1
    new_tokens: int = 0  # loop: single-position steps after the prompt
    # mla only: latent width, low-rank query width, rope features per head, layer width
    kv_lora_rank: int = 512
    q_lora_rank: int = 1536
    rope_dim: int = 64
    d_model: int = 2048

    @property
    def name(self) -> str:
        if self.pattern == "sliding":
            base = f"sliding{self.window}-{self.seq}"
        elif self.pattern == "loop":
            base = f"loop{self.window}-{self.seq}+{self.new_tokens}"
        else:
            base = f"{self.pattern}-{self.seq}"
        return base + (f"-b{self.batch}" if self.batch != 1 else "")

    @property
    def q_len(self) -> int:
        """Query positions of one call (loop: of the whole loop, prompt and steps)."""
        if self.pattern == "loop":
            return self.seq + self.new_tokens
        return 1 if self.pattern in ("decode", "mla") else self.seq

    @property
    def k_len(self) -> int:
        return self.seq + 1 if self.pattern in ("decode", "mla") else self.q_len

    def cache_bytes(self) -> int:
        """Bytes of the KV cache a decode step reads (past K and V, float32): what the
        memcpy probes copy once. 0 for cases without a per-head K/V cache input."""
        if self.pattern != "decode":
            return 0
        return 2 * self.batch * self.kv_heads * self.seq * self.head_dim * 4

    @property
    def block(self) -> int:
        """BigBird block size (random / global / window are counted in these blocks)."""
        return max(self.window // 4, 1)

    @property
    def mask_expr(self) -> str:
        s, b = self.seq, self.block
        return {
            "dense": "all",
            "causal": "causal",
            "decode": "causal",
            "loop": f"causal & sliding({self.window})",
            "mla": "causal",
            "sliding": f"sliding({self.window})",
            # BigBird ITC: a 3-block window, the first and last blocks global, 3 random blocks
            "bigbird": (f"window({b + b // 2}, {b + b // 2}) | global(0..{b - 1}, "
                        f"{s - b}..{s - 1}) | random(3, block={b}, seed=0)"),
        }[self.pattern]

    def spec_text(self, dynamic: bool = False) -> str:
        """The case as an attndsl spec (YAML). ``dynamic`` makes the sequence dim symbolic
        (position-only patterns; BigBird's random blocks need static lengths)."""
        if self.pattern == "mla":
            return self.mla_spec_text(dynamic=dynamic)
        h, g, d = self.heads, self.kv_heads, self.head_dim
        seq = "dynamic" if (dynamic and self.pattern != "bigbird") or self.pattern == "loop" \
            else self.q_len
        lines = ["attndsl: 1", f"name: bench_{self.pattern}",
                 f"dims: {{batch: {self.batch}, seq: {seq}}}", "inputs:",
                 f"  q: [batch, seq, {h * d}]", f"  k: [batch, seq, {g * d}]",
                 f"  v: [batch, seq, {g * d}]", "blocks:", "  attn:", "    project: false",
                 "    query: q", "    key: k", "    value: v", f"    heads: {h}",
                 f"    kv_heads: {g}", f"    head_dim: {d}", f"    mask: {self.mask_expr}"]
        if self.pattern == "loop":
            lines.append("    rope: {theta: 10000.0}")
        if self.pattern in ("decode", "loop"):
            lines.append("    cache: true")
        return "\n".join(lines + ["outputs:", "  y: attn", ""])

    def mla_spec_text(self, absorb: str = "cache", dynamic: bool = False) -> str:
        """The mla case's layer as an attndsl spec: ``absorb`` is the mla option (``cache``:
        absorbed, as cached; ``never``: plain)."""
        dn, dr = self.head_dim, self.rope_dim
        seq = "dynamic" if dynamic else self.q_len
        return "\n".join([
            "attndsl: 1", "name: bench_mla",
            f"dims: {{batch: {self.batch}, seq: {seq}, d_model: {self.d_model}}}",
            "inputs:", "  x: [batch, seq, d_model]", "blocks:", "  attn:", "    query: x",
            f"    heads: {self.heads}", f"    head_dim: {dn + dr}", f"    v_head_dim: {dn}",
            "    mask: causal", f"    rope: {{theta: 10000.0, dim: {dr}}}",
            f"    mla: {{kv_lora_rank: {self.kv_lora_rank}, q_lora_rank: {self.q_lora_rank}, "
            f"absorb: {absorb}}}", "    cache: true", "outputs:", "  y: attn", ""])

    def bool_mask(self) -> np.ndarray:
        """The mask as bool [Sq, Sk], evaluated by attndsl's numpy mask evaluator from the
        spec (so every peer attends exactly the pairs attndsl does)."""
        from attndsl.api import parse_spec
        from attndsl.masks.eval import eval_mask

        block = parse_spec(self.spec_text(), "bench.yaml").blocks[0]
        past = self.k_len - self.q_len
        q_pos = np.arange(past, past + self.q_len)
        full = eval_mask(block.mask, self.heads, q_pos, np.arange(self.k_len))
        return np.array(np.broadcast_to(full[0, 0], (self.q_len, self.k_len)))

    def attended_pairs(self) -> int:
        """Attended (query, key) pairs of one (batch, head)."""
        s, w = self.seq, self.window
        if self.pattern == "dense":
            return s * s
        if self.pattern == "causal":
            return s * (s + 1) // 2
        if self.pattern in ("sliding", "loop"):
            return int(np.minimum(np.arange(1, self.q_len + 1), w).sum())
        if self.pattern in ("decode", "mla"):
            return self.k_len
        return int(self.bool_mask().sum())

    def flops(self) -> float:
        """4·B·H·D·attended pairs (QK^T and PV, multiply-add = 2 flops); mla: the plain
        form's 2·B·H·(dn + dr + dv)·pairs."""
        if self.pattern == "mla":
            return (2.0 * self.batch * self.heads * (2 * self.head_dim + self.rope_dim)
                    * self.attended_pairs())
        return 4.0 * self.batch * self.heads * self.head_dim * self.attended_pairs()

    def dense_cells(self) -> int:
        """B·H·Sq·Sk: the score cells a dense implementation materializes."""
        return self.batch * self.heads * self.q_len * self.k_len

    def inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """The shared inputs: packed q, k, v (and the cache for decode), float32."""
        rng = np.random.default_rng(seed)
        b, h, g, d = self.batch, self.heads, self.kv_heads, self.head_dim
        if self.pattern == "mla":
            return {"x": rng.standard_normal((b, 1, self.d_model), dtype=np.float32),
                    "attn.past_latent": rng.standard_normal((b, self.seq, self.kv_lora_rank),
                                                            dtype=np.float32),
                    "attn.past_rope": rng.standard_normal((b, self.seq, self.rope_dim),
                                                          dtype=np.float32)}
        out = {"q": rng.standard_normal((b, self.q_len, h * d), dtype=np.float32),
               "k": rng.standard_normal((b, self.q_len, g * d), dtype=np.float32),
               "v": rng.standard_normal((b, self.q_len, g * d), dtype=np.float32)}
        if self.pattern == "decode":
            past = self.seq
            out["attn.past_key"] = rng.standard_normal((b, g, past, d), dtype=np.float32)
            out["attn.past_value"] = rng.standard_normal((b, g, past, d), dtype=np.float32)
        return out


# Mistral-7B's attention shape (32 query heads sharing 8 KV heads, head 128) with a window
# shorter than the loop, so the sliding window matters at these lengths
MISTRAL = {"heads": 32, "kv_heads": 8, "head_dim": 128, "window": 256}


def full_cases() -> list[Case]:
    return ([Case("dense", s) for s in (1024, 2048, 4096)]
            + [Case("causal", s) for s in (1024, 2048, 4096)]
            + [Case("sliding", s) for s in (2048, 4096, 8192, 16384)]
            + [Case("bigbird", 4096)]
            + [Case("decode", 4096, heads=32, kv_heads=8, head_dim=128, batch=b) for b in (1, 8)]
            + [Case("loop", 512, **MISTRAL, new_tokens=256)]
            + [Case("mla", 4096, heads=16, kv_heads=16, head_dim=128)])


def quick_cases() -> list[Case]:
    return [Case("dense", 1024), Case("causal", 2048), Case("sliding", 2048),
            Case("sliding", 4096), Case("bigbird", 2048),
            Case("decode", 2048, heads=32, kv_heads=8, head_dim=128),
            Case("decode", 2048, heads=32, kv_heads=8, head_dim=128, batch=8),
            Case("loop", 256, **MISTRAL, new_tokens=64),
            Case("mla", 4096, heads=16, kv_heads=16, head_dim=128)]


def dry_cases() -> list[Case]:
    """Tiny shapes: every code path in seconds (the smoke test)."""
    tiny = {"heads": 2, "kv_heads": 2, "head_dim": 16, "window": 32}
    return [Case("dense", 64, **tiny), Case("causal", 64, **tiny), Case("sliding", 128, **tiny),
            Case("sliding", 256, **tiny), Case("bigbird", 128, **tiny),
            Case("decode", 64, heads=4, kv_heads=2, head_dim=16),
            Case("decode", 64, heads=4, kv_heads=2, head_dim=16, batch=2),
            Case("loop", 32, heads=4, kv_heads=2, head_dim=16, window=16, new_tokens=16),
            Case("mla", 64, heads=4, kv_heads=4, head_dim=16, kv_lora_rank=32, q_lora_rank=24,
                 rope_dim=8, d_model=64)]


def select(cases: list[Case], wanted: list[str] | None) -> list[Case]:
    """Cases whose pattern or name matches one of ``wanted`` (``sliding``, ``causal-4096``,
    ``sliding256-8192``); all of them when ``wanted`` is empty."""
    if not wanted:
        return cases
    return [c for c in cases if any(w in (c.pattern, c.name) or c.name.startswith(w)
                                    for w in wanted)]
