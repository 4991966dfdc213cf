"""The compile targets, their ONNX opsets and the block-sparse strategies: the one table the
lowerings, ``lower.compile`` and the command line read.

Plain data, without onnx: the command line builds its ``--target``/``--opset``/``--sparse``
choices and help from it without loading the lowering. Which class lowers each target is
in ``lower.lowering`` (``LOWERINGS``), the module above both lowerings, so that
``onnx_portable`` (the base) never imports ``ort_contrib`` (its subclass).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LoweringError


@dataclass(frozen=True)
class Target:
    """A compile target: its name (``--target``) and the ONNX opsets it can emit."""

    name: str
    opsets: tuple[int, ...]


PORTABLE = Target("portable", (17, 18, 19, 20, 21))  # standard ops only
ORT = Target("ort", (17, 18, 19, 20, 21, 22, 23, 24))  # + ONNX Runtime fused kernels

TARGETS: dict[str, Target] = {t.name: t for t in (PORTABLE, ORT)}
TARGET_NAMES: tuple[str, ...] = tuple(TARGETS)
DEFAULT_TARGET = PORTABLE.name
# every opset some target supports (the ``--opset`` choices; the lowering checks the pair)
OPSETS: tuple[int, ...] = tuple(sorted({o for t in TARGETS.values() for o in t.opsets}))
DEFAULT_OPSET = 18

# block-sparse strategies (``lower/plan.py``): cost model, always dense, block-sparse
SPARSE_MODES: tuple[str, ...] = ("auto", "dense", "block")
DEFAULT_SPARSE = "auto"


def check_opset(opset: int, target: str = DEFAULT_TARGET) -> None:
    """Raise ``LoweringError`` unless ``target`` is known and supports ``opset``."""
    if target not in TARGETS:
        raise LoweringError(f"unknown target {target!r}",
                            hint=f"choose one of {', '.join(TARGETS)}")
    if opset not in TARGETS[target].opsets:
        raise LoweringError(
            f"unsupported ONNX opset {opset!r} for the {target} target",
            hint=f"choose one of {', '.join(map(str, TARGETS[target].opsets))}")


def opset_ranges() -> str:
    """``17..21 portable, 17..24 ort``: the opsets per target, for help texts."""
    return ", ".join(f"{t.opsets[0]}..{t.opsets[-1]} {t.name}" for t in TARGETS.values())
