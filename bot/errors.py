"""The error tree. Every message says what went wrong and what to do about it."""

from storage.errors import BlockLimitError, EmbeddingMismatchError, StorageError

__all__ = [
    "BlockLimitError",
    "ConfigError",
    "EmbeddingMismatchError",
    "InvalidInput",
    "MembotError",
    "ModelError",
    "StorageError",
    "ToolError",
]


class MembotError(Exception):
    """Base for membot's own errors."""


class ConfigError(MembotError):
    """A setting is missing or invalid; the message names the variable."""


class ModelError(MembotError):
    """The LLM endpoint failed. `user_message` is the short text shown to the user."""

    def __init__(self, message: str, user_message: str, *, context_overflow: bool = False) -> None:
        super().__init__(message)
        self.user_message = user_message
        self.context_overflow = context_overflow


class ToolError(MembotError):
    """A tool call failed; the message goes back to the model as the tool result."""


class InvalidInput(MembotError):
    """What a person asked for cannot be done as given (an unknown time zone, ...); the message
    says what to give instead and can be shown to them."""
