"""Errors raised by the storage layer. Each message names the fix."""


class StorageError(Exception):
    """The database could not do what was asked (locked, unreadable, too new, ...)."""


class BlockLimitError(StorageError):
    """A core memory write would exceed the block's character limit."""


class BlockNotFoundError(StorageError):
    """No core memory block with that label for this agent."""


class EmbeddingMismatchError(StorageError):
    """The database was embedded with another model or dimension than the one configured."""


class AgentNotFoundError(StorageError):
    """No agent with that id (never created, or forgotten)."""
