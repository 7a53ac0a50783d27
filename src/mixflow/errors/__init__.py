"""mixflow's error types (layer 0: every layer may raise them).

A :class:`MixflowError` is a mistake in what the user gave (a config key, a data file, a checkpoint
to resume): the command line prints it as one line naming what to fix. Any other exception is a
defect and keeps its traceback. Each type is also a ``ValueError``, so code that caught the
``ValueError`` these used to be keeps working.
"""

from __future__ import annotations


class MixflowError(ValueError):
    """A user-facing error: its message names the key, file or line and what was expected."""


class ConfigError(MixflowError):
    """A configuration mistake; the message is one line naming the key."""


class ConfigErrors(ConfigError):
    """Several configuration mistakes found in one pass; ``messages`` holds one line each, and
    ``str()`` puts each on its own line."""

    def __init__(self, messages: list[str]) -> None:
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        # an error raised in a worker process crosses back pickled: keep the lines, not their characters
        return (type(self), (self.messages,))


class DataError(MixflowError):
    """A data file or dataset that cannot be read as declared (the message names the file)."""


class ResumeError(MixflowError):
    """A checkpoint that cannot be resumed by this run (the message says what differs)."""


__all__ = ["ConfigError", "ConfigErrors", "DataError", "MixflowError", "ResumeError"]
