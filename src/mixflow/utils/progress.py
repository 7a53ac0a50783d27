"""Progress output on long work: a tqdm bar on a terminal, a log line every few seconds elsewhere.

A job whose stderr goes to a file (a cluster log, ``nohup``, CI) gets no bar from tqdm, which
only draws on terminals; :func:`progress` then logs ``<desc>: <n>/<total> <unit> (<pct>%)`` at most
every ``interval`` seconds and once at the end, so a log file shows the work moving too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger("mixflow.progress")

#: Seconds between two progress lines in a non-terminal log.
LOG_INTERVAL = 10.0


class LogProgress:
    """The part of tqdm's interface mixflow uses, reporting through ``logging``."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        interval: float = LOG_INTERVAL,
        **_: Any,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)  # type: ignore[arg-type]
        self.desc, self.unit, self.interval = desc, unit, interval
        self.n = 0.0
        self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._report()

    def _report(self) -> None:
        done = f"{self.n:.0f}" + (f"/{self.total:.0f}" if self.total else "")
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        logger.info("%s: %s %s%s", self.desc, done, self.unit, pct)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._report()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar when stderr is a terminal, a :class:`LogProgress` otherwise, nothing when not
    ``enabled`` (a disabled tqdm). Keyword arguments are tqdm's (``total``, ``desc``, ``unit``, ...)."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    known = {k: v for k, v in kwargs.items() if k in ("total", "desc", "unit")}
    return LogProgress(iterable, **known)
