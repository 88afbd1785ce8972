"""Domain errors, each carrying the exit code the CLI returns for it."""

from __future__ import annotations


class NmbalanceError(Exception):
    """A failure reported to the user as one line; exit code 1."""

    exit_code = 1


class UsageError(NmbalanceError):
    """Bad command-line usage; exit code 2."""

    exit_code = 2


class ConfigError(NmbalanceError):
    """A config problem, located by file and line (or field path)."""

    exit_code = 2

    def __init__(
        self, source: str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        what = f"{self.field}: " if self.field else ""
        return f"{where}: {what}{self.message}"


class ConfigErrors(NmbalanceError):
    """Several config problems found in one pass, reported together."""

    exit_code = 2

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class ApplyError(NmbalanceError):
    """The kernel refused or did not keep what we asked for."""
