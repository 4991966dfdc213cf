"""The error hierarchy. Spans are data; messages are formatted in ``__str__``."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable

from .source import Span


class AttnDSLError(Exception):
    """Base of every error attndsl raises on purpose (bad spec, bad input, lowering limits)."""

    def __init__(self, message: str, span: Span | None = None,
                 hint: str | Callable[[], str | None] | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self._hint = hint

    @property
    def hint(self) -> str | None:
        """The suggestion; one given as a callable (``suggest``) is worked out when first
        read, so a spec with thousands of errors pays only for the ones written out."""
        if callable(self._hint):
            self._hint = self._hint()
        return self._hint

    @hint.setter
    def hint(self, value: str | None) -> None:
        self._hint = value

    def __str__(self) -> str:
        loc = f"{self.span.location()}: " if self.span is not None else ""
        out = f"{loc}error: {self.message}"
        if self.hint:
            out += f"; {self.hint}"
        if self.span is not None:
            shown = self.span.render()
            if shown:
                out += "\n" + shown
        return out


class SpecSyntaxError(AttnDSLError):
    """The text does not parse (DSL grammar, YAML syntax, expression syntax)."""


class SpecError(AttnDSLError):
    """The spec parses but means nothing valid (unknown key, dangling stream, bad sizes...)."""


class WeightsError(AttnDSLError):
    """A weights file is unreadable, or has missing, extra or mis-shaped arrays."""


class InputError(AttnDSLError):
    """Runtime inputs (``--inputs``) do not match the model."""


class LoweringError(AttnDSLError):
    """The IR cannot be lowered with the requested options."""


class RuntimeUnavailable(AttnDSLError):
    """A requested execution provider or runtime is not available."""


class SpecErrors(AttnDSLError):
    """Several errors of one spec, reported together."""

    def __init__(self, errors: Iterable[AttnDSLError]):
        self.errors = sorted(
            errors, key=lambda e: (e.span.line, e.span.col) if e.span else (1 << 30, 0)
        )
        super().__init__(f"{len(self.errors)} errors")

    shown = 50
    """Errors written out in full; more are counted (a spec of 60,000 duplicate lines gives
    one screen of errors, not 60,000)."""

    def __str__(self) -> str:
        out = "\n".join(str(e) for e in self.errors[:self.shown])
        if len(self.errors) > self.shown:
            out += f"\n... and {len(self.errors) - self.shown:,} more errors"
        return out


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid choice, or None."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def suggest(word: str, choices: Iterable[str],
            otherwise: str | None = None) -> Callable[[], str | None]:
    """``did_you_mean(word, choices) or otherwise``, worked out only when the error's hint is
    read (the fuzzy match costs about 0.2 ms; a 64 KiB spec can hold 7,000 unknown keys, of
    which 50 are written out)."""
    options = tuple(choices)
    return lambda: did_you_mean(word, options) or otherwise


class ErrorCollector:
    """Collects errors; ``raise_if_any`` raises one error or a SpecErrors group."""

    def __init__(self) -> None:
        self.errors: list[AttnDSLError] = []

    def add(self, err: AttnDSLError) -> None:
        self.errors.append(err)

    def error(self, message: str, span: Span | None,
              hint: str | Callable[[], str | None] | None = None) -> None:
        self.add(SpecError(message, span, hint))

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise SpecErrors(self.errors)


class SpecFileError(AttnDSLError):
    """A spec file cannot be read as spec text: missing, a directory, not UTF-8, binary."""


class LimitError(AttnDSLError):
    """An input is over one of the resource limits listed in ``docs/limits.md``."""
