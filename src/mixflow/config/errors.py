"""The configuration error types (defined in :mod:`mixflow.errors`, re-exported here) and the collector
that reports every config mistake at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mixflow.errors import ConfigError, ConfigErrors

__all__ = ["ConfigError", "ConfigErrors", "ErrorCollector"]

T = TypeVar("T")


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
