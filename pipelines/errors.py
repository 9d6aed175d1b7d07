"""Errors the app shows to users; torch-free so pages can catch them without importing the model stack."""


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be loaded here (e.g. a hub id that is not cached on an offline machine)."""


class PipelineInputError(ValueError):
    """A request's parameters cannot be run; the message says which one and why."""


class RunCancelled(RuntimeError):
    """A run was stopped between denoising steps because its caller asked it to stop."""
