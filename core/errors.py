"""The error hierarchy of the engine.

Every expected failure is a `CoreError` with a message an operator can act on; the CLI and the
console show it as is. Anything else is a bug and may show a traceback. No dependencies.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base of every expected failure."""


class ConfigError(CoreError):
    """A workspace or pipeline file is wrong.

    Attributes:
        file: the file that holds the mistake.
        line: 1-based line number, or None when the file as a whole is wrong.
        field: dotted path of the field (``repos[0].path``), or "" for the document.
        problem: what is wrong.
        fix: how to fix it.
    """

    def __init__(
        self, file: str, line: int | None, field: str, problem: str, fix: str = ""
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = (
            f"{where}: {self.field}: {self.problem}" if self.field else f"{where}: {self.problem}"
        )
        if self.fix:
            text += f" ({self.fix})"
        return text


class ConfigErrors(CoreError):
    """Several configuration errors found in one pass, reported together."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))


class WorkspaceNotFound(CoreError):
    """No ahead.yml where one was looked for."""


class NotFound(CoreError):
    """A repo, run, step or commit that does not exist."""


class InvalidRequest(CoreError):
    """A request that cannot be carried out in the current state (e.g. cancel a finished run)."""


class PermissionDenied(CoreError):
    """The actor's roles or the policy do not allow this (CLI exit code 3)."""


class LeaseHeld(CoreError):
    """Another engine holds this workspace."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        super().__init__(f"another engine holds this workspace: {holder}")


class GitError(CoreError):
    """A git command failed."""


class StoreError(CoreError):
    """The store could not be opened or written (disk full, corrupt file, newer schema)."""


class LeaseLost(CoreError):
    """This engine no longer holds the workspace lease (fenced out): it must write nothing more
    and clean up nothing, since what it ran now belongs to the engine that took over."""


class StoreReplaced(LeaseLost):
    """The store file was deleted or replaced while this engine ran."""
