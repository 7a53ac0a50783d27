"""The configuration error types (their own module so every config module can raise them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
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


class ErrorCollector:
    """Runs checks and keeps every :class:`ConfigError` they raise, so a run reports them all at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def run(self, check: Callable[..., T], *args: object) -> T | None:
        """``check(*args)``, or None with its error(s) kept."""
        try:
            return check(*args)
        except ConfigErrors as err:
            self.messages += err.messages
        except ConfigError as err:
            self.messages.append(str(err))
        return None

    def passes(self, check: Callable[..., object], *args: object) -> bool:
        """Run ``check(*args)`` like :meth:`run`; whether it raised nothing."""
        before = len(self.messages)
        self.run(check, *args)
        return len(self.messages) == before

    def raise_if_any(self) -> None:
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            raise ConfigErrors(self.messages)
