"""Front ends: both syntaxes parse to the same AST and IR; spans; expression precedence."""

from __future__ import annotations

import re

import pytest
from feature_specs import ALL_KEYS_DSL, ALL_KEYS_YAML, PAIRS
from hypothesis import given
from hypothesis import strategies as st

from attndsl import parse_spec
from attndsl.features import nodes as mn
from attndsl.frontend import ast, detect_syntax, parse_source
from attndsl.frontend.expr import Placement, parse_expr
from attndsl.frontend.writers import format_expr
from attndsl.source import Source


def parse(text: str, path: str) -> ast.SpecAST:
    return parse_source(Source(text, path))


def pos(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, col) of the nth occurrence of ``needle`` in ``text``."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def where(span) -> tuple[int, int]:
    return span.line, span.col


def setting(block: ast.BlockDecl, key: str) -> ast.Setting:
    return next(s for s in block.settings if s.key == key)


# ---------------------------------------------------------------- both syntaxes


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_yaml_and_dsl_give_equal_ast_and_ir(name: str) -> None:
    yaml_text, dsl_text = PAIRS[name]
    a, b = parse(yaml_text, f"{name}.yaml"), parse(dsl_text, f"{name}.attn")
    assert a == b
    assert parse_spec(yaml_text, f"{name}.yaml") == parse_spec(dsl_text, f"{name}.attn")


def test_all_keys_ir_has_every_setting() -> None:
    model = parse_spec(ALL_KEYS_YAML, "all_keys.yaml")
    assert (model.name, model.dtype, model.seed) == ("all_keys", "float16", 7)
    assert model.weights_file == "all_keys.safetensors"
    assert [d.size for d in model.dims] == [None, None, 64]
    assert [(i.name, i.dtype) for i in model.inputs] == [
        ("x", "float16"), ("lengths", "int64"), ("t", "float16")]
    b = model.block("attn")
    assert (b.heads, b.kv_heads, b.head_dim, b.v_head_dim) == (4, 2, 16, 8)
    assert (b.project, b.bias, b.out_dim, b.scale, b.cache) == (True, True, 32, 0.25, True)
    assert (b.rope.theta, b.rope.dim, b.rope.interleaved) == (500000.0, 8, True)
    assert [type(s) for s in b.score] == [mn.Alibi, mn.Softcap, mn.RelativeBias, mn.BiasInput]
    assert b.score[2] == mn.RelativeBias(8, 16, False)
    # prefix(<input>) is padding(<input>)
    assert b.mask.terms[1].terms[0] == mn.Padding("lengths")
    assert [(o.name, o.attr) for o in model.outputs] == [("y", None), ("probs", "weights")]


def test_blocks_are_sorted_by_dependencies() -> None:
    model = parse_spec(*PAIRS["all_masks"][:1], "all_masks.yaml")
    assert [b.name for b in model.blocks] == ["local", "cross", "docs"]
    assert not model.block("cross").self_attention
    assert model.block("docs").self_attention


def test_rope_forms() -> None:
    model = parse_spec(PAIRS["all_masks"][0], "all_masks.yaml")
    assert model.block("local").rope is None  # rope: false
    assert model.block("docs").rope.theta == 10000.0  # rope: null means defaults
    core = parse_spec(PAIRS["core"][1], "core.attn")
    assert core.block("core").rope.dim == 8  # bare `rope`: defaults, dim = head_dim


def test_yaml_alternative_forms_are_the_same_spec() -> None:
    a = ALL_KEYS_YAML.replace(
        "score: [alibi, softcap(30.0), relative_bias(buckets=8, max_distance=16, "
        "bidirectional=false), bias(t)]",
        "score:\n      - alibi, softcap(30.0)\n      - 'relative_bias(buckets=8, "
        "max_distance=16, bidirectional=false)'\n      - bias(t)")
    a = a.replace("x: [batch, seq, d_model]", "x: {shape: [batch, seq, d_model]}")
    a = a.replace("cache: true", "cache: yes")
    assert a != ALL_KEYS_YAML
    assert parse(a, "a.yaml") == parse(ALL_KEYS_YAML, "b.yaml")


def test_yaml_multiline_expressions() -> None:
    text = ALL_KEYS_YAML.replace(
        "score: [alibi, softcap(30.0), relative_bias(buckets=8, max_distance=16, "
        "bidirectional=false), bias(t)]",
        "score: [alibi,   # slopes\n      softcap(30.0),\n      relative_bias(buckets=8, "
        "max_distance=16, bidirectional=false), bias(t)]")
    text = text.replace('mask: "causal & sliding(16) & padding(lengths) | ',
                        'mask: causal & sliding(16)\n      & padding(lengths) |\n      ')
    text = text.replace('~window(2, 0)"', "~window(2, 0)")
    assert parse(text, "a.yaml") == parse(ALL_KEYS_YAML, "b.yaml")
    block = parse(text, "a.yaml").blocks[0]
    softcap = setting(block, "score").value[1]
    assert where(softcap.span) == pos(text, "softcap")
    mask = setting(block, "mask").value
    assert where(mask.operands[0].operands[2].span) == pos(text, "padding(lengths)")
    assert where(mask.operands[1].span) == pos(text, "prefix(lengths)")


def test_yaml_exponent_floats_and_name_like_keys() -> None:
    text = ALL_KEYS_YAML.replace("theta: 500000.0", "theta: 5e5").replace(
        "scale: 0.25", "scale: 2.5e-1")
    model = parse_spec(text, "a.yaml")
    assert model.block("attn").rope.theta == 500000.0
    assert model.block("attn").scale == 0.25
    # `on` and `null` are bools / null as values, but as keys they are names
    text = PAIRS["minimal"][0].replace("x:", "on:").replace("query: x", "query: 'on'")
    assert parse_spec(text, "m.yaml").inputs[0].name == "on"


@pytest.mark.parametrize("text,syntax", [
    ("attndsl: 1\n", "yaml"), ("# c\n\nattndsl 1\n", "dsl"), ("name: x\n", "yaml"),
    ("", "yaml"),
])
def test_detect_syntax_by_content(text: str, syntax: str) -> None:
    assert detect_syntax(Source(text, "<string>")) == syntax


def test_dsl_accepts_keywords_as_names() -> None:
    text = re.sub(r"\bx\b", "model", PAIRS["minimal"][1])
    text = re.sub(r"\battn\b", "mask", text)
    model = parse_spec(text, "m.attn")
    assert model.inputs[0].name == "model" and model.blocks[0].name == "mask"


def test_dsl_quoted_model_name() -> None:
    text = PAIRS["minimal"][1].replace("attndsl 1\n", 'attndsl 1\nmodel "gpt-2 block"\n')
    assert parse_spec(text, "m.attn").name == "gpt-2 block"


def test_model_name_defaults_to_file_stem() -> None:
    assert parse_spec(PAIRS["minimal"][0], "dir/tiny.yaml").name == "tiny"
    assert parse_spec(PAIRS["minimal"][1], "<string>").name == "model"


# ---------------------------------------------------------------- spans


def test_yaml_spans() -> None:
    text = ALL_KEYS_YAML
    spec = parse(text, "a.yaml")
    assert where(spec.top[0].span) == pos(text, "name:")
    assert where(spec.top[0].value_span) == pos(text, "all_keys")
    assert where(spec.dims[2].span) == pos(text, "d_model:")
    lengths = spec.inputs[1]
    assert where(lengths.span) == pos(text, "lengths:")
    assert where(lengths.dtype_span) == pos(text, "int64")
    assert where(lengths.shape[0].span) == pos(text, "batch", 2)
    block = spec.blocks[0]
    assert where(block.span) == pos(text, "attn:")
    assert where(setting(block, "heads").span) == pos(text, "heads:")
    heads_at = pos(text, "heads: 4")
    assert where(setting(block, "heads").value_span) == (heads_at[0], heads_at[1] + 7)
    assert where(spec.outputs[1].span) == pos(text, "probs:")


def test_yaml_expression_spans_point_into_the_file() -> None:
    text = ALL_KEYS_YAML
    block = parse(text, "a.yaml").blocks[0]
    mask = setting(block, "mask").value  # a double-quoted string
    assert isinstance(mask, ast.Or)
    causal, sliding, padding = mask.operands[0].operands
    assert where(causal.span) == pos(text, "causal")
    assert (causal.span.end_col - causal.span.col) == len("causal")
    assert where(sliding.span) == pos(text, "sliding(16)")
    assert where(sliding.args[0].span) == pos(text, "16)")
    window = mask.operands[1].operands[1]
    assert isinstance(window, ast.Not)
    assert where(window.span) == pos(text, "~window")
    assert where(window.operand.span) == pos(text, "window(2")
    score = setting(block, "score").value  # a flow list
    assert [where(c.span) for c in score] == [
        pos(text, "alibi"), pos(text, "softcap"), pos(text, "relative_bias"),
        pos(text, "bias(t)")]
    kw = score[2].args[1]
    assert isinstance(kw, ast.KwArg) and where(kw.span) == pos(text, "max_distance")


def test_yaml_single_quoted_and_block_list_spans() -> None:
    text = PAIRS["all_masks"][0]
    cross = parse(text, "a.yaml").blocks[0]
    mask = setting(cross, "mask").value  # 'global(0, 5) | ~prefix(3)'
    assert where(mask.operands[0].span) == pos(text, "global(0, 5) |")
    assert where(mask.operands[1].operand.span) == pos(text, "prefix(3)")
    score = setting(cross, "score").value  # "softcap(5.0), relative_bias"
    assert where(score[1].span) == pos(text, "relative_bias")


def test_dsl_spans() -> None:
    text = ALL_KEYS_DSL
    spec = parse(text, "a.attn")
    assert where(spec.version.span) == (2, 1)
    assert where(spec.top[1].value_span) == pos(text, "float16")
    assert where(spec.dims[1].span) == pos(text, "seq =")
    lengths = spec.inputs[1]
    assert where(lengths.span) == pos(text, "lengths:")
    assert where(lengths.dtype_span) == pos(text, "int64")
    block = spec.blocks[0]
    assert where(block.span) == pos(text, "attn =")
    assert where(setting(block, "query").span) == pos(text, "query")
    assert where(setting(block, "kv_heads").span) == pos(text, "kv_heads")
    assert where(setting(block, "kv_heads").value_span) == pos(text, "2, head_dim")
    mask = setting(block, "mask").value
    assert where(mask.operands[1].operands[0].span) == pos(text, "prefix(lengths)")
    rope = setting(block, "rope").value
    assert [where(k.span) for k in rope] == [
        pos(text, "theta"), pos(text, "dim =", 0), pos(text, "interleaved")]
    assert where(spec.outputs[1].span) == pos(text, "probs")


def test_dsl_line_continuation_keeps_positions() -> None:
    text = PAIRS["all_masks"][1]
    local = parse(text, "a.attn").blocks[1]
    mask = setting(local, "mask").value
    assert where(mask.operands[-1].operands[-1].span) == pos(text, "heads(0..1, 3)")


def test_ir_nodes_keep_spans() -> None:
    text = ALL_KEYS_YAML
    model = parse_spec(text, "a.yaml")
    b = model.block("attn")
    assert where(b.span) == pos(text, "attn:")
    assert where(b.mask.terms[0].terms[1].span) == pos(text, "sliding(16)")
    assert where(b.score[1].span) == pos(text, "softcap")
    assert where(model.input("t").span) == pos(text, "t:")


# ---------------------------------------------------------------- expressions


def expr(text: str):
    return parse_expr(text, Placement(Source(text, "<expr>")))


def shape(e) -> object:
    """The tree as nested tuples: ('|', ...), ('&', ...), ('~', x), or a call's text."""
    if isinstance(e, ast.Or):
        return ("|", *map(shape, e.operands))
    if isinstance(e, ast.And):
        return ("&", *map(shape, e.operands))
    if isinstance(e, ast.Not):
        return ("~", shape(e.operand))
    return e.name


@pytest.mark.parametrize("text,tree", [
    ("a | b & c", ("|", "a", ("&", "b", "c"))),
    ("a & b | c", ("|", ("&", "a", "b"), "c")),
    ("~a & b", ("&", ("~", "a"), "b")),
    ("~a | b", ("|", ("~", "a"), "b")),
    ("~(a | b)", ("~", ("|", "a", "b"))),
    ("a & b & c", ("&", "a", "b", "c")),
    ("a | b | c & ~d", ("|", "a", "b", ("&", "c", ("~", "d")))),
    ("(a | b) & c", ("&", ("|", "a", "b"), "c")),
    ("(a & b) & c", ("&", ("&", "a", "b"), "c")),
    ("~~a", ("~", ("~", "a"))),
    ("((a))", "a"),
])
def test_precedence(text: str, tree: object) -> None:
    assert shape(expr(text)) == tree


@pytest.mark.parametrize("text,canonical", [
    ("a|b&c", "a | b & c"),
    ("(a & b) | c", "a & b | c"),
    ("(a | b) & c", "(a | b) & c"),
    ("~(a)", "~a"),
    ("~(a & b)", "~(a & b)"),
    ("(a & b) & c", "(a & b) & c"),
    ("a | (b | c)", "a | (b | c)"),
    ("sliding( 64 )", "sliding(64)"),
    ("random(2,block = 16,seed=7)", "random(2, block=16, seed=7)"),
    ("heads(0..3, 5)", "heads(0..3, 5)"),
    ("softcap(30.0) & causal()", "softcap(30.0) & causal()"),
    ("window(-1, +2)", "window(-1, +2)"),
])
def test_minimal_parentheses(text: str, canonical: str) -> None:
    assert format_expr(expr(text)) == canonical
    assert expr(canonical) == expr(text)


_LEAVES = st.sampled_from(["causal", "sliding(4)", "heads(0..1)", "window(2, 0)",
                           "random(1, block=2, seed=0)", "padding(len)", "all"])


def _exprs():
    return st.recursive(
        _LEAVES.map(expr),
        lambda inner: st.one_of(
            inner.map(lambda e: ast.Not(e)),
            st.lists(inner, min_size=2, max_size=3).map(lambda es: ast.And(tuple(es))),
            st.lists(inner, min_size=2, max_size=3).map(lambda es: ast.Or(tuple(es)))),
        max_leaves=8)


@given(_exprs())
def test_printed_expressions_read_back_as_the_same_tree(e) -> None:
    text = format_expr(e)
    assert expr(text) == e
    for i, j in _grouping_parens(text):  # every pair of parentheses is needed
        shorter = text[:i] + text[i + 1:j] + text[j + 1:]
        assert expr(shorter) != e


def _grouping_parens(text: str) -> list[tuple[int, int]]:
    """(open, close) indices of the parentheses that group terms (not call arguments)."""
    stack, pairs = [], []
    for i, c in enumerate(text):
        if c == "(":
            stack.append((i, i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")))
        elif c == ")":
            start, is_call = stack.pop()
            if not is_call:
                pairs.append((start, i))
    return pairs
