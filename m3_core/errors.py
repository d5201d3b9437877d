"""Exceptions raised by m3_core for bad input; their message is meant for the user as is."""


class M3Error(Exception):
    """Base class: bad input or state that the caller can fix (one readable line)."""


class InvalidInputError(M3Error, ValueError):
    """Malformed images, NaN or non-rigid poses, empty text, oversize requests, ..."""


class CheckpointError(M3Error):
    """A memory or checkpoint is missing, truncated or corrupt."""


class UnknownModelError(M3Error, KeyError):
    """A feature/extractor name that is not registered or not in the memory."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingWeightsError(M3Error, FileNotFoundError):
    """Model weights are not available locally (hubs are never contacted)."""
