"""Errors raised by the storage layer. Each message names the fix.

The faults of the machine (locked, read-only, full, no such folder) also carry `user_message`:
a short, truthful sentence for the person whose message could not be kept, in plain words; the
full message is for the log. storage/faults.py maps driver errors to them.
"""


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


class DatabaseLockedError(StorageError):
    """Another process still held the write lock after MEMBOT_DB_LOCK_WAIT seconds."""

    user_message = (
        "My memory has been busy with other work for a while, so I couldn't keep your message. "
        "Please send it again in a few minutes."
    )


class ReadOnlyDatabaseError(StorageError):
    """The database file, its folder or its filesystem cannot be written."""

    user_message = (
        "I couldn't keep your message: my storage is read-only, and the bot's owner has to fix that. "
        "Please try again later."
    )


class DiskFullError(StorageError):
    """The disk (or a quota, or PRAGMA max_page_count) has no room for the write."""

    user_message = (
        "I couldn't keep your message: my storage is full, and the bot's owner has to free some space. "
        "Please try again later."
    )


class DatabasePathError(StorageError):
    """MEMBOT_DB names a file that cannot be created or opened (a parent is a file, no permission)."""

    user_message = "I couldn't open my memory; the bot's owner has to fix where it is kept."
