"""What a pass is: a named rewrite with typed options that returns its result and whether it
changed anything.

Two stages share this interface. IR passes (``stage = "ir"``, this package) rewrite a
``Program``: the IR model and the weights that go with it (a pass may change both, e.g.
fusing projections). Graph passes (``stage = "graph"``, ``lower/graph_passes``: they need
onnx, which this package never imports) rewrite the lowered ONNX ``ModelProto``. A pass never
mutates its input; it builds a new payload (``dataclasses.replace`` for the IR, a copy for
ONNX). An IR pass decides from the model alone, never from the weights' values (it may
compute new weights from them): the model a pipeline makes of a spec is then known without
the weights (``lower.pipeline.model_after``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from ..arrays import ArrayLike, Deferred
from ..errors import AttnDSLError
from ..ir.nodes import Model

Stage = Literal["ir", "graph"]
T = TypeVar("T")


def _read_only(weights: Mapping[str, ArrayLike]) -> Mapping[str, ArrayLike]:
    out: dict[str, ArrayLike] = {}
    for name, arr in weights.items():
        if isinstance(arr, Deferred):  # read-only already, and made only when written
            out[name] = arr
            continue
        view = np.asarray(arr).view()  # a view: the caller's array keeps its flags
        view.flags.writeable = False
        out[name] = view
    return MappingProxyType(out)


@dataclass(frozen=True, eq=False)
class Program:
    """What IR passes rewrite: the model and its parameters (name -> array, read-only; the
    weights a pass makes are ``arrays.Deferred``, made only when written).

    The weights always match ``model.weight_shapes()``; passes that change the layout (fused
    projections, dropped blocks) change both together. (Compared by identity: arrays have no
    plain equality.)"""

    model: Model
    weights: Mapping[str, ArrayLike] = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _read_only(self.weights))

    def with_(self, model: Model | None = None,
              weights: Mapping[str, np.ndarray] | None = None) -> Program:
        return replace(self, model=model or self.model,
                       weights=self.weights if weights is None else weights)


@dataclass(frozen=True)
class PassResult(Generic[T]):
    """The rewritten payload and whether it differs from the input."""

    program: T
    changed: bool


@dataclass(frozen=True)
class NoOptions:
    """Options of a pass that has none."""


class Pass(ABC, Generic[T]):
    """A named rewrite. ``name`` is kebab-case; ``Options`` is the frozen dataclass of its
    options (``NoOptions`` when it has none)."""

    name: ClassVar[str]
    stage: ClassVar[Stage]
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None):
        if options is None:
            options = self.Options()
        if not isinstance(options, self.Options):
            raise AttnDSLError(f"pass '{self.name}' takes {self.Options.__name__}, "
                               f"not {type(options).__name__}")
        self.options = options

    @abstractmethod
    def run(self, program: T) -> PassResult[T]:
        """Rewrite ``program``; never mutate it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class IRPass(Pass[Program]):
    """A pass over the ``Program`` (IR model and weights), run before lowering."""

    stage: ClassVar[Stage] = "ir"

