"""The errors danlu shows to a user: each message says what happened and what to do.

The CLI and the server catch `DanluError` and print or return its message; anything else is a bug.
"""


class DanluError(Exception):
    """An expected failure with a message meant for the user (Chinese first, English after)."""


class NotDownloaded(DanluError):
    """The weights are not in the store yet."""


class IntegrityError(DanluError):
    """A file's checksum or size does not match the catalog."""


class BackendUnavailable(DanluError):
    """The runtime a model needs is not installed or cannot run on this machine."""


class ContextOverflow(DanluError):
    """A prompt does not fit in the context window even after dropping history."""
