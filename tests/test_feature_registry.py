"""The feature registry: every registered feature has a rule for every stage its kind needs,
engines dispatch through the tables only, and the features package stays in its layer."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

from attndsl.features import base, registry
from attndsl.features import nodes as mn
from attndsl.features.masks import causal

ROOT = Path(__file__).resolve().parent.parent / "attndsl"
FEATURES_DIR = ROOT / "features"


def test_every_registered_feature_has_every_stage():
    problems = registry.problems()
    assert not problems, "\n".join(problems)


def test_a_feature_missing_a_stage_is_named(monkeypatch):
    fake = dataclasses.replace(causal.FEATURE, name="fake", node=type("Fake", (mn.Mask,), {}),
                               lower=None, algebra=None)
    monkeypatch.setattr(registry, "FEATURES", (*registry.FEATURES, fake))
    problems = registry.problems()
    assert "feature 'fake' (mask) has no 'algebra' rule" in problems
    assert "feature 'fake' (mask) has no 'lower' rule" in problems
    assert len(problems) == 2, problems


def test_a_score_missing_a_stage_is_named(monkeypatch):
    fake = base.Feature(name="fake_score", kind="score", node=type("FakeScore", (mn.Score,), {}),
                        format=lambda s: "fake_score", eval=None, lower=None, ort=None,
                        inputs=base.NO_INPUTS, weights=None)
    monkeypatch.setattr(registry, "FEATURES", (fake,))
    assert registry.problems() == [
        f"feature 'fake_score' (score) has no '{s}' rule" for s in ("eval", "lower", "ort",
                                                                   "weights")]


def test_two_features_with_one_name_or_node_clash(monkeypatch):
    twin = dataclasses.replace(causal.FEATURE)
    monkeypatch.setattr(registry, "FEATURES", (causal.FEATURE, twin))
    problems = registry.problems()
    assert any("'causal'" in p and "also declared" in p for p in problems), problems


def test_every_feature_module_is_discovered():
    for kind, table in (("masks", registry.MASKS), ("scores", registry.SCORES)):
        modules = sorted(p.stem for p in (FEATURES_DIR / kind).glob("*.py")
                         if not p.stem.startswith("_") and p.stem != "logic")
        found = {sys.modules[f.node.__module__].__name__.rsplit(".", 1)[1]
                 for f in table.values()}
        assert found == set(modules)
    assert {f.node for f in registry.FEATURES if f.kind == "combinator"} == {mn.And, mn.Or,
                                                                            mn.Not}


def test_every_block_feature_module_is_discovered_in_name_order():
    modules = sorted(p.stem for p in (FEATURES_DIR / "blocks").glob("*.py")
                     if not p.stem.startswith("_"))
    found = [sys.modules[f.node.__module__].__name__.rsplit(".", 1)[1]
             for f in registry.BLOCK_FEATURES]
    assert found == modules and "rope" in found
    assert not registry.block_problems()


def test_a_block_feature_missing_a_rule_is_named():
    rope = registry.BLOCKS["rope"]
    broken = dataclasses.replace(rope, ort=None, portable={}, reference={"rop": print})
    lines = registry.block_problems((broken,))
    assert "block feature 'rope' has no 'ort' rule" in lines
    assert "block feature 'rope' has no portable rule" in lines
    assert "block feature 'rope': unknown reference hook 'rop'" in lines
    clash = registry.block_problems((rope, dataclasses.replace(rope, key="rope2")))
    assert any("also declared by 'rope'" in line for line in clash)


def test_block_rules_run_in_registry_order():
    from attndsl.features.blocks.rope import Rope
    nodes = registry.block_order([Rope(1.0, 2, False)])
    assert registry.block_rules("portable", "rope", nodes)[0][0] == Rope(1.0, 2, False)
    assert registry.block_rules("portable", "softmax", nodes) == []


def test_rule_lookup_is_by_node_class():
    assert registry.rule("format", mn.Window(2, 3))(mn.Window(2, 3)) == "window(2, 3)"
    with pytest.raises(TypeError, match="no 'format' rule"):
        registry.rule("format", object())


def _node_class_names() -> set[str]:
    """Mask primitives, score modifiers and block features (``Rope``, ``QKNorm``...)."""
    return ({f.node.__name__ for f in registry.FEATURES if f.kind != "combinator"}
            | {f.node.__name__ for f in registry.BLOCK_FEATURES})


def _class_refs(node: ast.AST) -> set[str]:
    """Names (``X`` or ``mod.X``) inside an expression."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
    return out


def _type_checks(tree: ast.AST):
    """``isinstance(x, T)`` second arguments and ``type(x) is / == / in T`` comparisons."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
            yield node, node.args[1]
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Call) and isinstance(s.func, ast.Name)
                   and s.func.id == "type" for s in sides):
                for s in sides:
                    yield node, s


def test_no_isinstance_chain_over_feature_nodes_outside_features():
    names = _node_class_names()
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if FEATURES_DIR in path.parents:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node, target in _type_checks(tree):
            hit = _class_refs(target) & names
            if hit:
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: "
                                 f"{', '.join(sorted(hit))}")
    assert not offenders, "type checks on feature nodes:\n" + "\n".join(offenders)


def test_the_scan_finds_a_type_check():
    tree = ast.parse("if isinstance(m, (mn.Causal, n.Window)) or type(m) is Heads: pass")
    hits = set().union(*(_class_refs(t) for _, t in _type_checks(tree))) & _node_class_names()
    assert hits == {"Causal", "Window", "Heads"}


_ALLOWED = {"numpy", "__future__"}


def test_features_import_only_their_layer():
    """features/ imports the standard library, numpy, attndsl.source, attndsl.errors and
    itself; never onnx, lark, the frontend, the IR, the masks engines or the lowering."""
    stdlib = sys.stdlib_module_names
    offenders = []
    for path in sorted(FEATURES_DIR.rglob("*.py")):
        package = ["attndsl", *path.parent.relative_to(ROOT).parts]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base_parts = package[: len(package) - node.level + 1]
                mods = [".".join(base_parts + ([node.module] if node.module else []))]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                if (mod in ("attndsl.source", "attndsl.errors") or mod == "attndsl.features"
                        or mod.startswith("attndsl.features.")
                        or mod.split(".")[0] in _ALLOWED | stdlib):
                    continue
                offenders.append(f"{path.relative_to(ROOT.parent)}: {mod}")
    assert not offenders, "\n".join(offenders)
