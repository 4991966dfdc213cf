"""Hypothesis strategies: random mask expressions and random whole specs (as YAML text)."""

from __future__ import annotations

import functools

from hypothesis import strategies as st

POSITION_LEAVES = (
    st.just("all"), st.just("none"), st.just("causal"),
    st.builds(lambda l, r: f"window({l}, {r})", st.integers(0, 6), st.integers(0, 6)),
    st.builds(lambda w: f"sliding({w})", st.integers(1, 8)),
    st.builds(lambda l, r, d: f"dilated({l}, {r}, {d})", st.integers(0, 8), st.integers(0, 8),
              st.integers(1, 3)),
    st.builds(lambda s: f"strided({s})", st.integers(1, 4)),
    st.builds(lambda c: f"chunk({c})", st.integers(1, 6)),
    st.builds(lambda c, n: f"summary({c}, {min(n, c)})", st.integers(1, 6), st.integers(1, 3)),
    st.builds(lambda n: f"prefix({n})", st.integers(0, 4)),
    st.builds(lambda ps: "global(" + ", ".join(map(str, sorted(set(ps)))) + ")",
              st.lists(st.integers(0, 9), min_size=1, max_size=3)),
)


def heads_leaf(n_heads: int):
    return st.builds(lambda a, b: f"heads({min(a, b)}..{max(a, b)})",
                     st.integers(0, n_heads - 1), st.integers(0, n_heads - 1))


INPUT_LEAVES = (st.just("padding(lengths)"), st.just("document(doc)"), st.just("mask(m)"))


def mask_text(n_heads: int = 4, inputs: bool = True, random_leaf: bool = False,
              max_leaves: int = 6):
    """A random mask expression over the primitives (text in the one expression syntax)."""
    leaves = [*POSITION_LEAVES, heads_leaf(n_heads)]
    if inputs:
        leaves += list(INPUT_LEAVES)
    if random_leaf:
        leaves.append(st.builds(lambda r, b, s: f"random({r}, block={b}, seed={s})",
                                st.integers(1, 3), st.sampled_from([2, 3, 4]),
                                st.integers(0, 99)))
    leaf = st.one_of(*leaves)

    def extend(children):
        return st.one_of(
            st.builds(lambda a: f"~{_paren(a)}", children),
            st.builds(lambda a, b: f"{_paren(a)} & {_paren(b)}", children, children),
            st.builds(lambda a, b: f"({a} | {b})", children, children),
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves)


def _paren(text: str) -> str:
    return text if text.replace("_", "").replace("(", "").isalnum() or text.startswith("(") \
        else f"({text})"


SCORE_ITEMS = ("alibi", "softcap(20.0)", "softcap(3.5)",
               "relative_bias(buckets=8, max_distance=16)", "bias(tb)")
TOPOLOGIES = ("single", "chain", "cross", "core")
QK_NORMS = (None, None, "rms", "l2", "{kind: layer, weight: per_head, bias: true}",
            "{scope: width, eps: 1e-5}", "{offset: 1.0, after_rope: true}")
SINKS = (None, None, "true", "constant")
MASK_INPUTS = {"lengths": "  lengths: {shape: [batch], dtype: int64}",
               "doc": "  doc: {shape: [batch, seq], dtype: int64}",
               "m": "  m: {shape: [seq, seq], dtype: bool}",
               "tb": "  tb: [seq, seq]"}


@st.composite
def _block(draw, name: str, query: str, fixed_lengths: bool, *,
           key_value: str | None = None, core: bool = False,
           rich: bool = False) -> tuple[list[str], dict[str, int]]:
    """The lines of one block, and its heads / kv_heads / head_dim. Cross-attention
    (``key_value`` another stream) and cached blocks avoid the inputs shaped by ``seq`` alone
    (document ids, mask(m), bias(tb))."""
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([4, 8]))
    cache = draw(st.booleans()) and not fixed_lengths
    plain = cache or key_value is not None
    mask = draw(mask_text(heads, inputs=True, random_leaf=fixed_lengths, max_leaves=4))
    if plain:
        mask = mask.replace("document(doc)", "causal").replace("mask(m)", "causal")
    scores = draw(st.lists(st.sampled_from(SCORE_ITEMS), max_size=2, unique=True))
    if plain:
        scores = [s for s in scores if s != "bias(tb)"]
    rope = draw(st.sampled_from([None, "{theta: 10000.0}", "{dim: 4, interleaved: true}"]))
    qk_norm = draw(st.sampled_from(QK_NORMS))
    if core and qk_norm is not None:
        qk_norm = "l2"  # core mode has no weights: the weightless norm only
    sinks = draw(st.sampled_from(SINKS))
    if core and sinks is not None:
        sinks = "constant"  # core mode has no weights: the sink of logit 0 only
    # DIFF attention pairs heads and kv heads by halves (both even) and has weights
    diff = (not core and heads % 2 == 0 and kv % 2 == 0
            and draw(st.sampled_from([None, None, "true", "{layer: 2, eps: 1e-6}"])))
    lines = [f"  {name}:", f"    query: {query}"]
    if core:
        lines += ["    project: false", "    key: kc", "    value: vc"]
    elif key_value is not None:
        lines.append(f"    key_value: {key_value}")
    lines += [f"    heads: {heads}", f"    kv_heads: {kv}"]
    if not core:
        lines += [f"    head_dim: {head_dim}",
                  f"    bias: {draw(st.sampled_from(['true', 'false']))}"]
    lines.append(f"    mask: \"{mask}\"")
    if rich and not core:
        for key, values in (("v_head_dim", [2, 6]), ("out_dim", [8, 12]),
                            ("scale", [0.25, 1.5])):
            if draw(st.booleans()):
                lines.append(f"    {key}: {draw(st.sampled_from(values))}")
    if scores:
        lines.append(f"    score: [{', '.join(scores)}]")
    if rope:
        lines.append(f"    rope: {rope}")
    if qk_norm:
        lines.append(f"    qk_norm: {qk_norm}")
    if sinks:
        lines.append(f"    sinks: {sinks}")
    if diff:
        lines.append(f"    diff: {diff}")
    if cache:
        lines.append("    cache: true")
    return lines, {"heads": heads, "kv": kv, "head_dim": head_dim}


@st.composite
def spec_yaml(draw, fixed_lengths: bool = False, rich: bool = False,
              float16: bool = False) -> str:
    """A random valid spec (YAML) using every feature class: GQA, rope, cache, scores, masks.

    ``rich`` adds more topologies (two chained blocks, cross-attention to a second stream,
    core mode) and the size keys v_head_dim / out_dim / scale; ``float16`` may pick that
    dtype. Without them the spec is one projected self-attention block in float32."""
    d_model = draw(st.sampled_from([8, 16]))
    topology = draw(st.sampled_from(TOPOLOGIES)) if rich else "single"
    dtype = draw(st.sampled_from(["float32", "float16"])) if float16 else "float32"
    seq = "6" if fixed_lengths else "dynamic"
    mem = "5" if fixed_lengths else "dynamic"
    block = functools.partial(_block, fixed_lengths=fixed_lengths, rich=rich)
    inputs = ["  x: [batch, seq, d_model]"]
    if topology == "single":
        blocks, _ = draw(block("attn", "x"))
    elif topology == "chain":
        blocks = draw(block("attn", "x"))[0] + draw(block("top", "attn"))[0]
    elif topology == "cross":
        inputs.append("  mem: [batch, mem_len, 12]")
        blocks, _ = draw(block("attn", "x", key_value="mem"))
    else:  # core mode: the query stream has width heads * head_dim
        blocks, b = draw(block("attn", "qc", core=True))
        inputs = [f"  qc: [batch, seq, {b['heads'] * b['head_dim']}]",
                  f"  kc: [batch, seq, {b['kv'] * b['head_dim']}]",
                  f"  vc: [batch, seq, {b['kv'] * b['head_dim']}]"]
    used = " ".join(blocks)
    inputs += [line for name, line in MASK_INPUTS.items() if f"({name})" in used]
    last = "top" if topology == "chain" else "attn"
    lines = [
        "attndsl: 1", "name: random_spec", f"dtype: {dtype}", f"seed: {draw(st.integers(0, 5))}",
        "dims:", "  batch: dynamic", f"  seq: {seq}", f"  d_model: {d_model}",
        *([f"  mem_len: {mem}"] if topology == "cross" else []),
        "inputs:", *inputs, "blocks:", *blocks,
        "outputs:", f"  y: {last}", "  p: attn.weights",
    ]
    return "\n".join(lines) + "\n"
