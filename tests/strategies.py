"""Hypothesis strategies: random mask expressions and random whole specs (as YAML text)."""

from __future__ import annotations

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


@st.composite
def spec_yaml(draw, fixed_lengths: bool = False) -> str:
    """A random valid spec (YAML) using every feature class: GQA, rope, cache, scores, masks."""
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([4, 8]))
    d_model = draw(st.sampled_from([8, 16]))
    cache = draw(st.booleans()) and not fixed_lengths
    mask = draw(mask_text(heads, inputs=True, random_leaf=fixed_lengths, max_leaves=4))
    if cache:
        mask = mask.replace("document(doc)", "causal").replace("mask(m)", "causal")
    scores = draw(st.lists(st.sampled_from(SCORE_ITEMS), max_size=2, unique=True))
    if cache:
        scores = [s for s in scores if s != "bias(tb)"]
    rope = draw(st.sampled_from([None, "{theta: 10000.0}", "{dim: 4, interleaved: true}"]))
    seq = "6" if fixed_lengths else "dynamic"
    lines = [
        "attndsl: 1", "name: random_spec", f"seed: {draw(st.integers(0, 5))}",
        "dims:", "  batch: dynamic", f"  seq: {seq}", f"  d_model: {d_model}",
        "inputs:", "  x: [batch, seq, d_model]",
        "  lengths: {shape: [batch], dtype: int64}",
        "  doc: {shape: [batch, seq], dtype: int64}",
        "  m: {shape: [seq, seq], dtype: bool}",
        "  tb: [seq, seq]",
        "blocks:", "  attn:", "    query: x", f"    heads: {heads}", f"    kv_heads: {kv}",
        f"    head_dim: {head_dim}", f"    mask: \"{mask}\"",
        f"    bias: {draw(st.sampled_from(['true', 'false']))}",
    ]
    if scores:
        lines.append(f"    score: [{', '.join(scores)}]")
    if rope:
        lines.append(f"    rope: {rope}")
    if cache:
        lines.append("    cache: true")
    lines += ["outputs:", "  y: attn", "  p: attn.weights"]
    used = " ".join([mask, *scores])
    keep = []
    for line in lines:
        name = line.strip().split(":")[0]
        if name in ("lengths", "doc", "m", "tb") and line.startswith("  ") and not \
                line.startswith("    ") and f"({name})" not in used:
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"
