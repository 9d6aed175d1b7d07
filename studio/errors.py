"""The studio's errors: one hierarchy, so a page, a command or a test can tell a refusal from a bug.

Every error the studio raises on purpose is a `StudioError` whose message is written for the person who
caused it. A refusal changed nothing: no row, no stored file, no credit moved. Errors particular to one
service derive from these beside it (`InsufficientCredits`, `UploadRejected`, `CatalogueError`, …). The
model code has its own (`pipelines.errors`): it never imports the studio.
"""


class StudioError(Exception):
    """An error the studio raises on purpose; its message says what happened and what to do."""


class Refused(StudioError, ValueError):
    """A request the studio refused (a submit, an upload, a preset, an admin action, a command): nothing changed."""


class Forbidden(StudioError, PermissionError):
    """The acting user may not do this (not an admin, or an admin acting on their own account); nothing changed."""


class NotFound(StudioError, LookupError):
    """There is no such thing that this user can see (another user's job reads the same as a missing one)."""


class ConfigError(StudioError, ValueError):
    """The studio refuses to start or serve with this configuration; the message says how to fix it."""
