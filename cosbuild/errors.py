"""User-facing errors: every one names the file (and line or key) and what to do."""

from __future__ import annotations

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


class ErrorList(CosbuildError):
    """Several independent mistakes, reported together (e.g. by `cosbuild validate`)."""

    def __init__(self, errors: list[CosbuildError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class Collector:
    """Gathers errors from independent items so one run reports all of them."""

    def __init__(self) -> None:
        self.errors: list[CosbuildError] = []

    def add(self, error: CosbuildError) -> None:
        if isinstance(error, ErrorList):
            self.errors.extend(error.errors)
        else:
            self.errors.append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ErrorList(self.errors) if len(self.errors) > 1 else self.errors[0]


def did_you_mean(word: str, candidates) -> str | None:
    import difflib   # only on the error path
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
