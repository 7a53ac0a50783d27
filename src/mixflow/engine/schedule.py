"""When algorithm updates happen: the seed's ``warmup_step``, ``update_step`` and ``update_times``."""

from __future__ import annotations

from dataclasses import dataclass

from mixflow.errors import ConfigError


@dataclass
class UpdateSchedule:
    """When algorithm updates happen (the seed's ``warmup_step``, ``update_step``, ``update_times``)."""

    warmup_step: int = 0
    """Optimizer steps trained with the initial weights before the first update."""
    update_step: int = 100
    """Steps between two updates; the first update happens at step ``max(warmup_step, update_step)``
    when ``warmup_step`` is 0, else at ``warmup_step``."""
    update_times: int = -1
    """Number of updates; -1 keeps updating until training ends."""

    def __post_init__(self) -> None:
        # The one check of these keys: the config loader builds a schedule to run it.
        for key, low in (("warmup_step", 0), ("update_step", 1), ("update_times", -1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key}: expected an integer >= {low}, got {getattr(self, key)}")

    def first_update(self) -> int | None:
        """The step of the first update (None: ``update_times`` is 0, there is none)."""
        if self.update_times == 0:
            return None
        return self.warmup_step if self.warmup_step > 0 else self.update_step

    def is_update(self, step: int, updates_done: int) -> bool:
        """Whether the step that just completed (1-based count of optimizer steps) triggers an update."""
        if 0 <= self.update_times <= updates_done:
            return False
        return step >= max(self.warmup_step, 1) and (step - self.warmup_step) % self.update_step == 0
