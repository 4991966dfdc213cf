# ruff: noqa: E501  (spec texts keep their long lines)
"""The same specs in both syntaxes, covering every key, primitive and modifier.

Each entry is (YAML text, .attn text); the two say the same thing setting by setting, so
they parse to equal ASTs (and IRs). Used by the front-end, conversion and golden tests.
"""

from __future__ import annotations

ALL_KEYS_YAML = """\
# every top-level key and every block key
attndsl: 1
name: all_keys
dtype: float16
seed: 7
weights: all_keys.safetensors
dims:
  batch: dynamic
  seq: dynamic
  d_model: 64
inputs:
  x: [batch, seq, d_model]
  lengths: {shape: [batch], dtype: int64}
  t: {shape: [batch, 1, 1, seq]}
blocks:
  attn:
    query: x
    key_value: x
    heads: 4
    kv_heads: 2
    head_dim: 16
    v_head_dim: 8
    project: true
    bias: true
    out_dim: 32
    scale: 0.25
    score: [alibi, softcap(30.0), relative_bias(buckets=8, max_distance=16, bidirectional=false), bias(t)]
    mask: "causal & sliding(16) & padding(lengths) | prefix(lengths) & ~window(2, 0)"
    rope: {theta: 500000.0, dim: 8, interleaved: true}
    cache: true
outputs:
  y: attn
  probs: attn.weights
"""

ALL_KEYS_DSL = """\
# every top-level key and every block key
attndsl 1
model all_keys
dtype float16
seed 7
weights "all_keys.safetensors"
dims batch = dynamic, seq = dynamic, d_model = 64
input x: [batch, seq, d_model]
input lengths: int64[batch]
input t: [batch, 1, 1, seq]

block attn = attention(query = x, key_value = x) {
  heads 4, kv_heads 2, head_dim 16, v_head_dim 8
  project true
  bias
  out_dim 32
  scale 0.25
  score alibi, softcap(30.0), relative_bias(buckets = 8, max_distance = 16, bidirectional = false), bias(t)
  mask causal & sliding(16) & padding(lengths) | prefix(lengths) & ~window(2, 0)
  rope theta = 500000.0, dim = 8, interleaved = true
  cache
}

output y = attn
output probs = attn.weights
"""

ALL_MASKS_YAML = """\
attndsl: 1
name: all_masks
dims:
  batch: dynamic
  seq: 32
  mem_len: 16
  d_model: 64
inputs:
  x: [batch, seq, d_model]
  memory: [batch, mem_len, 48]
  ids: {shape: [batch, seq], dtype: int64}
  m: {shape: [batch, 1, seq, seq], dtype: bool}
blocks:
  # declared before the block it reads: blocks are sorted by their streams
  cross:
    query: local
    key_value: memory
    heads: 2
    mask: 'global(0, 5) | ~prefix(3)'
    score: "softcap(5.0), relative_bias"
  local:
    query: x
    heads: 4
    mask: (window(4, 4) | global(0, 5) | random(2, block=8, seed=3)) & ~dilated(2, 2, 2) | strided(4) & chunk(8) | summary(8, 2) & heads(0..1, 3)
    rope: false
  docs:
    query: local
    heads: 4
    head_dim: 8
    mask: document(ids) & mask(m) | all & ~none & (prefix(2) | causal) & ~~heads(2)
    score: []
    rope: null
outputs:
  out: cross
  docs: docs
  local_probs: local.weights
"""

ALL_MASKS_DSL = """\
attndsl 1
model all_masks
dims batch = dynamic, seq = 32
dims mem_len = 16, d_model = 64
input x: [batch, seq, d_model]
input memory: [batch, mem_len, 48]
input ids: int64[batch, seq]
input m: bool[batch, 1, seq, seq]

# declared before the block it reads: blocks are sorted by their streams
block cross = attention(query = local, key_value = memory) {
  heads 2
  mask global(0, 5) | ~prefix(3)
  score softcap(5.0), relative_bias
}

block local = attention(query = x) {
  heads 4
  mask (window(4, 4) | global(0, 5) | random(2, block=8, seed=3)) & ~dilated(2, 2, 2) \\
       | strided(4) & chunk(8) | summary(8, 2) & heads(0..1, 3)
  rope false
}

block docs = attention(query = local) { heads 4, head_dim 8
  mask document(ids) & mask(m) | all & ~none & (prefix(2) | causal) & ~~heads(2)
  score
  rope
}

output out = cross
output docs = docs
output local_probs = local.weights
"""

CORE_YAML = """\
attndsl: 1
name: core
dims:
  batch: dynamic
  seq: dynamic
  kv: dynamic
inputs:
  q: [batch, seq, 32]
  k: [batch, kv, 16]
  v: [batch, kv, 24]
  qk: [batch, seq, 8]
blocks:
  core:
    project: false
    query: q
    key: k
    value: v
    heads: 4
    kv_heads: 2
    mask: chunk(4) | prefix(1)
    rope: true
  mqa:
    query: q
    key_value: qk
    project: false
    heads: 4
    kv_heads: 1
    scale: 1
outputs:
  y: core
  z: mqa
"""

CORE_DSL = """\
attndsl 1
model core
dims batch = dynamic, seq = dynamic, kv = dynamic
input q: [batch, seq, 32]
input k: [batch, kv, 16]
input v: [batch, kv, 24]
input qk: [batch, seq, 8]
block core = attention(project = false, query = q, key = k, value = v) {
  heads 4, kv_heads 2
  mask chunk(4) | prefix(1)
  rope
}
block mqa = attention(query = q, key_value = qk) {
  project false
  heads 4
  kv_heads 1
  scale 1
}
output y = core
output z = mqa
"""

MINIMAL_YAML = """\
attndsl: 1
dims: {batch: 2, seq: 8}
inputs:
  x: [batch, seq, 16]
blocks:
  attn: {query: x, heads: 2}
outputs:
  y: attn
"""

MINIMAL_DSL = """\
attndsl 1
dims batch = 2, seq = 8
input x: [batch, seq, 16]
block attn = attention(query = x, heads = 2) {}
output y = attn
"""

PAIRS: dict[str, tuple[str, str]] = {
    "all_keys": (ALL_KEYS_YAML, ALL_KEYS_DSL),
    "all_masks": (ALL_MASKS_YAML, ALL_MASKS_DSL),
    "core": (CORE_YAML, CORE_DSL),
    "minimal": (MINIMAL_YAML, MINIMAL_DSL),
}
