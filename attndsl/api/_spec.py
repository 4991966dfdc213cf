"""``Spec``: a spec as an immutable Python object, loaded from text or built from scratch,
edited, checked into IR and written back as YAML or ``.attn``.

A Spec wraps the syntax tree both front ends produce (``frontend.ast.SpecAST``), so the YAML
and ``.attn`` writers and readers stay the one definition of the syntax: writing a Spec and
reading the text back gives an equal tree, whatever the syntax.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import AttnDSLError, SpecError, did_you_mean
from ..features.registry import BLOCKS
from ..fileio import write_atomic
from ..frontend import ast, detect_syntax, parse_dsl, parse_source, parse_yaml, read_source
from ..frontend.expr import Placement, parse_expr
from ..frontend.writers import format_call, format_expr, write_dsl, write_yaml
from ..ir import Model, build_ir
from ..source import Source

__all__ = ["SYNTAXES", "Spec", "load_spec", "parse_spec"]

Syntax = Literal["yaml", "attn"]
SYNTAXES: tuple[str, ...] = ("yaml", "attn")
Scalar = int | float | bool | str
RopeValue = bool | Mapping[str, Scalar]
FeatureValue = Scalar | Mapping[str, Scalar]  # a block feature: True/False, shorthand, mapping

# Block settings in the order a new setting is placed: the stream settings first, so that
# the `.attn` writer puts them into the `attention(...)` header.
# The block features (``rope``, ``qk_norm``, ...) come from the registry, before ``cache``.
_BLOCK_ORDER = ("query", "key_value", "key", "value", "heads", "kv_heads", "head_dim",
                "v_head_dim", "project", "bias", "out_dim", "scale", "mask", "score",
                *(k for k in BLOCKS if k != "bias"), "cache")  # bias: core and a feature
_STREAM_KEYS = ("query", "key_value", "key", "value")
_INT_KEYS = ("heads", "kv_heads", "head_dim", "v_head_dim", "out_dim")
_BOOL_KEYS = ("project", "bias", "cache")
_TOP_KEYS = ("name", "dtype", "seed", "weights")
_EXPR = (ast.Call, ast.Not, ast.And, ast.Or)


def load_spec(path: str | os.PathLike[str]) -> Model:
    """Read, parse and check a spec file (YAML or ``.attn``) into IR."""
    return build_ir(parse_source(read_source(path)))


def parse_spec(text: str, path: str = "<string>") -> Model:
    """Parse and check spec text; ``path`` picks the syntax by extension (else by content)."""
    return build_ir(parse_source(Source(text, path)))


def _parse(source: Source, syntax: Syntax) -> ast.SpecAST:
    return parse_yaml(source) if syntax == "yaml" else parse_dsl(source)


def _syntax_name(syntax: str) -> Syntax:
    """'yaml' or 'attn' (the front end's 'dsl' is 'attn' here)."""
    if syntax == "dsl":
        return "attn"
    if syntax not in SYNTAXES:
        raise AttnDSLError(f"unknown syntax {syntax!r}",
                           hint=did_you_mean(str(syntax), SYNTAXES) or "use 'yaml' or 'attn'")
    return syntax  # type: ignore[return-value]


def _syntax_of_path(path: str | os.PathLike[str]) -> Syntax:
    suffix = Path(path).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".attn":
        return "attn"
    raise AttnDSLError(f"cannot tell the syntax of '{path}'", hint="use .yaml, .yml or .attn")


def _checked(spec: ast.SpecAST) -> ast.SpecAST:
    """``spec`` if its front end found no errors; else every error of the spec, raised
    together as ``load_spec`` reports them."""
    if spec.errors:
        build_ir(spec)  # seeded with the front-end errors: raises them with the rest
    return spec


# ---------------------------------------------------------------- values -> syntax nodes


def _expr_source(block: str, key: str, text: str) -> Placement:
    """Where an expression given as a Python string is: a one-line source of its own, so a
    syntax error points into the string."""
    return Placement(Source(text, f"<{block}.{key}>"))


def _type_error(block: str, key: str, want: str, value: object) -> AttnDSLError:
    return AttnDSLError(f"block '{block}': '{key}' must be {want}, got {value!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _setting_value(block: str, key: str, value: object) -> object:
    """A Python value of a block setting as the syntax tree holds it. Types are checked here;
    ranges and names are checked by ``Spec.model()`` (errors with locations)."""
    if key in _STREAM_KEYS:
        if not isinstance(value, str):
            raise _type_error(block, key, "a stream name (str)", value)
        return value
    if key in _INT_KEYS:
        if not _is_int(value):
            raise _type_error(block, key, "an int", value)
        return value
    if key == "cache" and isinstance(value, Mapping):  # {"layout": "static", "max_len": N}
        if not all(isinstance(k, str) and isinstance(v, (int, str)) for k, v in value.items()):
            raise _type_error(block, key, "True, False or a mapping like "
                              "{'layout': 'static', 'max_len': 4096}", value)
        return tuple(ast.Setting(k, v) for k, v in value.items())
    if key in _BOOL_KEYS and not (key in BLOCKS and isinstance(value, Mapping)):
        if not isinstance(value, bool):
            raise _type_error(block, key, "True or False", value)
        return value
    if key == "scale":
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise _type_error(block, key, "a finite number", value)
        return value
    if key == "mask":
        if not isinstance(value, str):
            raise _type_error(block, key, "a mask expression (str)", value)
        return parse_expr(value, _expr_source(block, key, value), "mask_expr")
    if key == "score":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not all(isinstance(s, str) for s in items):
            raise _type_error(block, key, "a str or a list of str", value)
        calls: list[ast.Call] = []
        for text in items:
            if text.strip():
                calls.extend(parse_expr(text, _expr_source(block, key, text), "score_list"))
        return tuple(calls)
    if key in BLOCKS:  # a block feature: True / False / a shorthand scalar / a mapping
        if isinstance(value, (bool, int, float, str)):
            return value
        if not isinstance(value, Mapping):
            raise _type_error(block, key, "True, False, a scalar or a mapping like "
                              f"{BLOCKS[key].example}", value)
        out = []
        for k, v in value.items():
            if isinstance(v, (list, tuple)) and all(  # a float list (rope's long_factor)
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                v = list(v)  # as the YAML reader gives a list option
            elif not isinstance(k, str) or not isinstance(v, (int, float, bool, str)):
                raise _type_error(block, key, "a mapping of names to numbers, booleans, "
                                  "names or lists of numbers", value)
            out.append(ast.Setting(k, v))
        return tuple(out)
    raise AttnDSLError(f"unknown block setting '{key}'",  # pragma: no cover - typed API
                       hint=did_you_mean(key, _BLOCK_ORDER))


def _python_value(s: ast.Setting) -> object:
    """The inverse of ``_setting_value``: what ``Spec.block`` shows."""
    v = s.value
    if s.key == "mask" and isinstance(v, _EXPR):
        return format_expr(v)
    if s.key == "score" and isinstance(v, tuple):
        return [format_call(c) for c in v]
    if (s.key in BLOCKS or s.key == "cache") and isinstance(v, tuple):
        return {k.key: k.value for k in v}
    return v


def _given(arguments: Mapping[str, object]) -> dict[str, object]:
    """The block settings among a method's arguments (its ``locals()`` taken first thing, so
    they hold the parameters only), with the block features of ``features``."""
    out = {k: v for k, v in arguments.items() if k in _BLOCK_ORDER}
    for k, v in (arguments.get("features") or {}).items():
        if k not in BLOCKS:
            raise AttnDSLError(f"unknown block feature '{k}'",
                               hint=did_you_mean(str(k), BLOCKS)
                               or f"block features: {', '.join(BLOCKS)}")
        out[k] = v
    return out


def _block_settings(block: str, values: Mapping[str, object]) -> list[ast.Setting]:
    return [ast.Setting(key, _setting_value(block, key, values[key]))
            for key in _BLOCK_ORDER if key in values and values[key] is not None]


def _merge(settings: Sequence[ast.Setting], new: Sequence[ast.Setting]) -> tuple[ast.Setting, ...]:
    """``settings`` with each of ``new`` replacing the setting of its key in place, or
    appended when the key is not set yet."""
    by_key = {s.key: s for s in new}
    out = [by_key.pop(s.key, s) for s in settings]
    return (*out, *(s for s in new if s.key in by_key))


def _dim_value(name: str, size: object) -> int | str:
    if _is_int(size) or size == "dynamic":
        return size  # type: ignore[return-value]
    raise AttnDSLError(f"dim '{name}' must be an int or 'dynamic', got {size!r}")


def _shape(name: str, shape: Sequence[int | str]) -> tuple[ast.ShapeEntry, ...]:
    if isinstance(shape, str) or not isinstance(shape, Sequence) or not all(
            _is_int(e) or isinstance(e, str) for e in shape):
        raise AttnDSLError(f"input '{name}': the shape must be a list of dim names and ints, "
                           f"got {shape!r}")
    return tuple(ast.ShapeEntry(e) for e in shape)


# ---------------------------------------------------------------- the Spec


@dataclass(frozen=True)
class Spec:
    """A spec: its syntax tree (``ast``), the syntax it is written in (``'yaml'`` or
    ``'attn'``), the file it came from (``path``, which names the model when the spec does
    not, and which a relative ``weights`` path is relative to) and, until it is edited, the
    text it was read from.

    Specs are immutable: every ``add_*`` / ``with_*`` / ``replace_*`` / ``remove_*`` method
    returns a new Spec. Two specs are equal when they say the same thing, in whatever syntax
    (comments and layout do not count).

    >>> spec = Spec.load("examples/mistral_block.yaml").with_block("attn", heads=16)
    >>> spec.model().block("attn").heads
    16
    """

    ast: ast.SpecAST
    syntax: Syntax = field(default="yaml", compare=False)
    path: str | None = field(default=None, compare=False)
    source_text: str | None = field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        where = f", path={self.path!r}" if self.path else ""
        return (f"Spec(name={self.name!r}, blocks={list(self.blocks)!r}, "
                f"syntax={self.syntax!r}{where})")

    # ------------------------------------------------------------ making one

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Spec:
        """Read a spec file (``.yaml`` / ``.yml`` / ``.attn``, else by content). Syntax
        errors raise here; meaning is checked by ``model()``."""
        source = read_source(path)
        syntax = _syntax_name(detect_syntax(source))
        return cls(_checked(_parse(source, syntax)), syntax, str(path), source.text)

    @classmethod
    def parse(cls, text: str, syntax: Syntax | None = None, *, path: str | None = None) -> Spec:
        """Spec text in ``syntax`` (``'yaml'`` or ``'attn'``; None: by ``path``'s extension,
        else by the content). ``path`` is where the text came from, if anywhere: it names
        the model when the spec does not, and a relative ``weights`` path is relative to
        it."""
        source = Source(text, path or "<string>")
        syntax = _syntax_name(syntax if syntax is not None else detect_syntax(source))
        return cls(_checked(_parse(source, syntax)), syntax, path, text)

    @classmethod
    def new(cls, name: str | None = "model", *, dims: Mapping[str, int | str] | None = None,
            dtype: str | None = None, seed: int | None = None, weights: str | None = None,
            syntax: Syntax = "yaml") -> Spec:
        """An empty spec (format version 1) to build on: ``dims`` maps names to sizes or
        ``'dynamic'``; ``dtype``, ``seed`` and ``weights`` are set when given."""
        top = tuple(ast.Setting(k, v) for k, v in (("name", name), ("dtype", dtype),
                                                    ("seed", seed), ("weights", weights))
                    if v is not None)
        spec = ast.SpecAST(ast.Setting("attndsl", 1), top, (), (), (), ())
        out = cls(spec, _syntax_name(syntax))
        for dim, size in (dims or {}).items():
            out = out.add_dim(dim, size)
        return out

    # ------------------------------------------------------------ reading it

    @property
    def name(self) -> str | None:
        """The ``name`` the spec sets (None: the model is named after the file)."""
        return next((s.value for s in self.ast.top if s.key == "name"), None)

    @property
    def dims(self) -> dict[str, int | str]:
        """Dim name -> size or ``'dynamic'``, as written."""
        return {d.name: d.value for d in self.ast.dims}

    @property
    def inputs(self) -> dict[str, tuple[tuple[int | str, ...], str | None]]:
        """Input name -> (shape, dtype or None for the model's)."""
        return {i.name: (tuple(e.value for e in i.shape), i.dtype) for i in self.ast.inputs}

    @property
    def blocks(self) -> tuple[str, ...]:
        """The block names, in the spec's order."""
        return tuple(b.name for b in self.ast.blocks)

    @property
    def outputs(self) -> dict[str, str]:
        """Output name -> ``'block'`` or ``'block.weights'``."""
        return {o.name: o.stream + (f".{o.attr}" if o.attr else "") for o in self.ast.outputs}

    def block(self, name: str) -> dict[str, object]:
        """The settings of block ``name`` as written (defaults are not filled in): a mask as
        its expression text, score modifiers as a list of texts, RoPE as True/False or a
        dict."""
        return {s.key: _python_value(s) for s in self._block(name).settings}

    @property
    def text(self) -> str:
        """The spec's text: as it was read, until edited; then written in ``syntax``."""
        if self.source_text is not None:
            return self.source_text
        return self._write(self.syntax)[0]

    def to_yaml(self) -> str:
        """The spec as canonical YAML (no comments; settings in the order written)."""
        return self._write("yaml")[0]

    def to_attn(self) -> str:
        """The spec as canonical ``.attn`` text (no comments)."""
        return self._write("attn")[0]

    def model(self) -> Model:
        """The checked IR; every error of the spec raises (``SpecError``, or ``SpecErrors``
        with all of them), each with its location. An edited spec's locations point into
        its ``text``, under the name ``'<path> (edited)'`` (or ``'<string>'``)."""
        if self.source_text is not None:  # as read: exactly what load_spec gives
            return build_ir(self.ast)
        label = f"{self.path} (edited)" if self.path else "<string>"
        text, _ = self._write(self.syntax)
        model = build_ir(_parse(Source(text, label), self.syntax))
        if self.path is None:
            return model
        # the label is not a path: name and weights follow the file the spec came from
        weights = next((s.value for s in self.ast.top if s.key == "weights"), None)
        return dataclasses.replace(
            model, name=self.name if self.name is not None else Path(self.path).stem,
            weights_file=(str(Path(self.path).parent / weights) if weights is not None
                          else None),
            spec_path=self.path)

    def save(self, path: str | os.PathLike[str], *, check: bool = True) -> Spec:
        """Write the spec to ``path`` (syntax by extension: ``.yaml``/``.yml`` or ``.attn``)
        atomically, and return it as read from there. With ``check`` (the default) only a
        valid spec is written (``model()`` raises first). A relative ``weights`` path is
        rewritten to keep naming the same file from the new folder."""
        to = _syntax_of_path(path)
        if check:
            self.model()
        spec = dataclasses.replace(self, ast=self._rebased(Path(path)), syntax=to,
                                   source_text=None)
        text, _ = spec._write(to)
        write_atomic(path, text.encode("utf-8"))
        return Spec(_parse(Source(text, str(path)), to), to, str(path), text)

    # ------------------------------------------------------------ editing

    def with_settings(self, *, name: str | None = None, dtype: str | None = None,
                      seed: int | None = None, weights: str | None = None) -> Spec:
        """The top-level settings given (those left None keep their value)."""
        new = [ast.Setting(k, v) for k, v in (("name", name), ("dtype", dtype), ("seed", seed),
                                              ("weights", weights)) if v is not None]
        return self._edit(top=_merge(self.ast.top, new))

    def add_dim(self, name: str, size: int | str) -> Spec:
        """A new dim: an int size or ``'dynamic'``."""
        self._absent("dim", name, self.dims)
        return self._edit(dims=(*self.ast.dims, ast.DimDecl(name, _dim_value(name, size))))

    def with_dim(self, name: str, size: int | str) -> Spec:
        """Dim ``name`` resized."""
        self._present("dim", name, self.dims)
        d = ast.DimDecl(name, _dim_value(name, size))
        return self._edit(dims=tuple(d if x.name == name else x for x in self.ast.dims))

    def remove_dim(self, name: str) -> Spec:
        """The spec without dim ``name``."""
        self._present("dim", name, self.dims)
        return self._edit(dims=tuple(x for x in self.ast.dims if x.name != name))

    def add_input(self, name: str, shape: Sequence[int | str], dtype: str | None = None) -> Spec:
        """A new input: ``shape`` lists dim names and ints; ``dtype`` defaults to the
        model's (float inputs of shape [batch, seq, width] are streams)."""
        self._absent("input", name, self.inputs)
        decl = ast.InputDecl(name, _shape(name, shape), dtype)
        return self._edit(inputs=(*self.ast.inputs, decl))

    def with_input(self, name: str, shape: Sequence[int | str],
                   dtype: str | None = None) -> Spec:
        """Input ``name`` with a new shape and dtype."""
        self._present("input", name, self.inputs)
        decl = ast.InputDecl(name, _shape(name, shape), dtype)
        return self._edit(inputs=tuple(decl if i.name == name else i for i in self.ast.inputs))

    def remove_input(self, name: str) -> Spec:
        """The spec without input ``name``."""
        self._present("input", name, self.inputs)
        return self._edit(inputs=tuple(i for i in self.ast.inputs if i.name != name))

    def add_block(self, name: str, *, query: str, heads: int, key_value: str | None = None,
                  key: str | None = None, value: str | None = None,
                  kv_heads: int | None = None, head_dim: int | None = None,
                  v_head_dim: int | None = None, project: bool | None = None,
                  bias: bool | Mapping[str, bool] | None = None, out_dim: int | None = None,
                  scale: float | None = None, mask: str | None = None,
                  score: str | Sequence[str] | None = None, rope: RopeValue | None = None,
                  cache: bool | Mapping[str, int | str] | None = None,
                  features: Mapping[str, FeatureValue] | None = None) -> Spec:
        """A new attention block (its name is its output stream). Settings left None are
        not written, so they take their defaults (see the README's "The spec language"):
        ``mask`` is an expression such as ``"causal & sliding(16)"``, ``score`` one or more
        modifiers such as ``["alibi", "softcap(30.0)"]``, ``rope`` True (defaults), False or
        ``{"theta": 1e4, "dim": 32}``; ``bias`` True (all four projections) or the ones
        that have one, ``{"q": True, "k": True, "v": True}``; ``cache`` True (growing) or
        ``{"layout": "static", "max_len": 4096}``; ``features`` any block feature
        by its key, e.g. ``{"qk_norm": "rms"}`` or ``{"qk_norm": {"kind": "layer", "eps":
        1e-5}}``."""
        values = _given(locals())
        self._absent("block", name, self.blocks)
        block = ast.BlockDecl(name, tuple(_block_settings(name, values)))
        return self._edit(blocks=(*self.ast.blocks, block))

    def with_block(self, name: str, *, query: str | None = None, heads: int | None = None,
                   key_value: str | None = None, key: str | None = None,
                   value: str | None = None, kv_heads: int | None = None,
                   head_dim: int | None = None, v_head_dim: int | None = None,
                   project: bool | None = None, bias: bool | Mapping[str, bool] | None = None,
                   out_dim: int | None = None, scale: float | None = None,
                   mask: str | None = None, score: str | Sequence[str] | None = None,
                   rope: RopeValue | None = None,
                   cache: bool | Mapping[str, int | str] | None = None,
                   features: Mapping[str, FeatureValue] | None = None,
                   remove: Iterable[str] = ()) -> Spec:
        """Block ``name`` with the settings given changed (in place) or added; settings left
        None keep their value, and the keys in ``remove`` are dropped (back to defaults)."""
        values = _given(locals())
        old = self._block(name)
        remove = tuple(remove)
        for drop in remove:
            if drop not in _BLOCK_ORDER:
                raise AttnDSLError(f"unknown block setting '{drop}'",
                                   hint=did_you_mean(str(drop), _BLOCK_ORDER)
                                   or f"settings: {', '.join(_BLOCK_ORDER)}")
        kept = [s for s in old.settings if s.key not in remove]
        settings = _merge(kept, _block_settings(name, values))
        return self._replace_block(name, dataclasses.replace(old, settings=settings))

    def replace_block(self, name: str, *, query: str, heads: int, key_value: str | None = None,
                      key: str | None = None, value: str | None = None,
                      kv_heads: int | None = None, head_dim: int | None = None,
                      v_head_dim: int | None = None, project: bool | None = None,
                      bias: bool | Mapping[str, bool] | None = None, out_dim: int | None = None,
                      scale: float | None = None, mask: str | None = None,
                      score: str | Sequence[str] | None = None, rope: RopeValue | None = None,
                      cache: bool | Mapping[str, int | str] | None = None,
                      features: Mapping[str, FeatureValue] | None = None) -> Spec:
        """Block ``name`` with exactly these settings (as ``add_block``), at its place."""
        values = _given(locals())
        old = self._block(name)
        return self._replace_block(
            name, dataclasses.replace(old, settings=tuple(_block_settings(name, values))))

    def remove_block(self, name: str) -> Spec:
        """The spec without block ``name`` (outputs that name it are left for ``model()``
        to report)."""
        self._block(name)
        return self._edit(blocks=tuple(b for b in self.ast.blocks if b.name != name))

    def add_output(self, name: str, ref: str) -> Spec:
        """A new output: ``'block'`` (its output stream) or ``'block.weights'`` (its
        attention probabilities)."""
        self._absent("output", name, self.outputs)
        if not isinstance(ref, str):
            raise AttnDSLError(f"output '{name}' must name a block, got {ref!r}")
        stream, _, attr = ref.partition(".")
        return self._edit(outputs=(*self.ast.outputs,
                                   ast.OutputDecl(name, stream, attr or None)))

    def remove_output(self, name: str) -> Spec:
        """The spec without output ``name``."""
        self._present("output", name, self.outputs)
        return self._edit(outputs=tuple(o for o in self.ast.outputs if o.name != name))

    # ------------------------------------------------------------ helpers

    def _edit(self, **changes: object) -> Spec:
        """A new Spec with parts of the tree changed; it no longer has a source text."""
        return dataclasses.replace(self, ast=dataclasses.replace(self.ast, **changes),
                                   source_text=None)

    def _replace_block(self, name: str, block: ast.BlockDecl) -> Spec:
        return self._edit(blocks=tuple(block if b.name == name else b for b in self.ast.blocks))

    def _block(self, name: str) -> ast.BlockDecl:
        self._present("block", name, self.blocks)
        return next(b for b in self.ast.blocks if b.name == name)

    @staticmethod
    def _present(what: str, name: str, names: Iterable[str]) -> None:
        names = list(names)
        if name not in names:
            raise SpecError(f"the spec has no {what} '{name}'",
                            hint=did_you_mean(str(name), names)
                            or (f"its {what}s: {', '.join(names)}" if names else None))

    @staticmethod
    def _absent(what: str, name: str, names: Iterable[str]) -> None:
        if not isinstance(name, str):
            raise AttnDSLError(f"a {what} name is a str, got {name!r}")
        if name in names:
            raise SpecError(f"the spec already has a {what} '{name}'",
                            hint=f"use with_{what}() to change it")

    def _write(self, syntax: Syntax) -> tuple[str, ast.SpecAST]:
        """The spec's text in ``syntax`` and that text read back, checked to be the same
        tree (writers keep every setting as written; a difference is a writer bug)."""
        text = (write_yaml if syntax == "yaml" else write_dsl)(self.ast)
        back = _parse(Source(text, "<string>"), syntax)
        if back.errors or back != self.ast:  # pragma: no cover - a writer bug
            raise AttnDSLError(f"internal error: the {syntax} text of the spec reads back "
                               "as a different spec; please report this")
        return text, back

    def _rebased(self, dst: Path) -> ast.SpecAST:
        """The tree with a relative ``weights`` path naming the same file from ``dst``'s
        folder (a spec without a file is relative to the working directory)."""
        from ..convert import rebase_weights

        return rebase_weights(self.ast, Path(self.path or "spec"), dst)
