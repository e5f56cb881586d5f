"""Typed, user-facing errors of the prompt store (all :class:`metaseg.errors.MetasegError`)."""

from __future__ import annotations

from metaseg.errors import MetasegError, UnknownNameError


class PromptTextError(MetasegError, ValueError):
    """Prompt text is empty, too long, or otherwise not storable."""


class PromptNotFoundError(UnknownNameError):
    """No prompt (or run) with the requested id exists."""


class LLMError(MetasegError, RuntimeError):
    """The LLM endpoint is not configured, unreachable, timed out, or returned an error."""


__all__ = ["MetasegError", "UnknownNameError", "PromptTextError", "PromptNotFoundError", "LLMError"]
