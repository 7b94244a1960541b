"""User-facing errors: every one names the file (and line or key) and what to do."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path


class CosbuildError(Exception):
    """A mistake in the user's input or environment; printed without a traceback."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 line: int | None = None, key: str | None = None,
                 hint: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.key}: " if self.key else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{key}{self.message}{hint}"


class NotFound(CosbuildError):
    """A repository file (or image) that is not there: a signed repository's client tells
    an unsigned repository by its missing metadata."""


class Mismatch(CosbuildError):
    """A download that is not what was vouched for; `reason` is "length" or "hash"."""

    def __init__(self, message: str, *, reason: str, **where):
        self.reason = reason
        super().__init__(message, **where)


class ErrorList(CosbuildError):
    """Several independent mistakes, reported together (e.g. by `cosbuild validate`)."""

    def __init__(self, errors: list[CosbuildError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class CosbuildWarning(CosbuildError):
    """A finding that does not stop a build: a key the real tool (yip, luet-makeiso) ignores.
    `cosbuild validate --strict` reports it as an error."""


class Collector:
    """Gathers errors (and warnings) from independent items so one run reports all of them."""

    def __init__(self) -> None:
        self.errors: list[CosbuildError] = []
        self.warnings: list[CosbuildError] = []

    def add(self, error: CosbuildError) -> None:
        for one in error.errors if isinstance(error, ErrorList) else [error]:
            (self.warnings if isinstance(one, CosbuildWarning) else self.errors).append(one)

    @contextlib.contextmanager
    def logged_warnings(self, logger: str = "cosbuild"):
        """Meanwhile, the warnings logged (each already "file:line: key: ...") are kept here
        instead of printed, to be reported with the errors."""
        keep = _KeepWarnings(self)
        logging.getLogger(logger).addFilter(keep)
        try:
            yield self
        finally:
            logging.getLogger(logger).removeFilter(keep)

    def raise_if_any(self, strict: bool = False) -> None:
        """Fail with every error; with `strict`, the warnings count as errors."""
        found = self.errors + (self.warnings if strict else [])
        if found:
            raise ErrorList(found) if len(found) > 1 else found[0]


class _KeepWarnings(logging.Filter):
    def __init__(self, collector: Collector):
        super().__init__()
        self.collector = collector

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        self.collector.warnings.append(CosbuildWarning(record.getMessage()))
        return False


def did_you_mean(word: str, candidates) -> str | None:
    import difflib   # only on the error path
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
