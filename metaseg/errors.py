"""Typed, user-facing errors.

Every error a user can cause (bad coordinates, unreadable file, unknown model name, broken
checkpoint, bad config) is a subclass of :class:`MetasegError`. Its message is one line that
says what is wrong and, where possible, what to do. The CLI turns these into
``stderr + exit 2``; the app turns them into ``gr.Error``.
"""

from __future__ import annotations


class MetasegError(Exception):
    """Base class for errors caused by user input. ``str(err)`` is a one-line message."""


class InvalidCoordinateError(MetasegError, ValueError):
    """Latitude/longitude outside the valid range, or not a finite number."""


class TileReadError(MetasegError, ValueError):
    """A tile (or label) file cannot be read: missing, empty, corrupt, unsupported or too large."""


class UnknownNameError(MetasegError, LookupError):
    """An unknown model variant, class set, dataset or zone name. The message lists valid names."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class CheckpointError(MetasegError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class ConfigError(MetasegError, ValueError):
    """A training/evaluation config has unknown keys or bad values."""


class DatasetNotFoundError(MetasegError, FileNotFoundError):
    """A dataset root does not contain the expected official layout."""


class ImageryError(MetasegError):
    """Imagery from the XYZ server cannot be had: switched off, unreachable, not an image, rate-limited."""
