"""Schedule: staged and interpolated mixtures, and stages that hand over to an online algorithm.

What practitioners train with today is a schedule of fixed mixtures — SmolLM3's three stages
(Hugging Face 2025: web/code/math 85/12/3 → 75/15/10 → 63/24/13), OLMo 2's mid-training anneal mix
(OLMo et al. 2024, arXiv 2501.00656, §4) — and mixflow adds stages whose weights an online
algorithm learns. With stage points S_i (what ``at`` says was trained before stage i, in steps)
and stage i holding the optimizer steps S_i < s ≤ S_{i+1}:

    proportions stage, ``interpolation: step``      p(s) = π_i
    proportions stage, ``interpolation: linear``    p(s) = π_i + (s − S_i − 1)/(S_{i+1} − S_i) · (π_{i+1} − π_i)
                                                    (to the next stage's proportions; the last stage holds)
    ``proportions: learned``                        π_i = the p in force when the stage begins, frozen
    ``algorithm: {name, params}``                   the algorithm's own p, started from the p in force
                                                    when the stage begins (its initial weights)

``at`` counts optimizer steps (``unit: step``), a fraction of ``max_steps`` (``fraction``:
S = round(at · max_steps)) or training tokens (``tokens``: S = ⌈at / (B · cutoff_len)⌉, the rows'
token budget, padding included). The step engine asks for every step's p before its batch is drawn
(:meth:`DomainAlgorithm.planned_sampling`), so p at every step is the schedule's exactly, and a
resume across a boundary continues the same stream.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mixflow.algorithms.base import DomainAlgorithm, ProviderSpec, split_inner, with_inner
from mixflow.algorithms.params import AlgorithmParams, ValidationContext, build_params
from mixflow.algorithms.registry import available_algorithms, build_algorithm, register_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights, as_distribution
from mixflow.errors import ConfigError, ResumeError

logger = logging.getLogger(__name__)

Unit = Literal["step", "fraction", "tokens"]
Interpolation = Literal["step", "linear"]
#: ``proportions: learned``: the stage keeps the p in force when it begins.
LEARNED = "learned"
_STAGE_KEYS = ("at", "proportions", "algorithm")


@dataclass
class ScheduleParams(AlgorithmParams):
    unit: Unit = "step"
    """What a stage's ``at`` counts: optimizer steps trained before it (step), a fraction of
    max_steps in [0, 1) (fraction) or training tokens, B × cutoff_len a step (tokens)"""
    interpolation: Interpolation = "step"
    """step: a stage's proportions hold until the next stage; linear: p moves step by step from a
    stage's proportions to the next stage's (when both are given as numbers)"""
    stages: list[dict[str, Any]] = field(default_factory=list)
    """[{at, proportions: [one per domain] | learned} or {at, algorithm: {name, params}}], ``at``
    increasing from 0 (the first stage)"""

    def validate(self, where: str, context: ValidationContext | None = None) -> None:
        errors: list[str] = []
        if not self.stages:
            errors.append(f"{where}.stages: expected at least one stage, e.g. [{{at: 0, proportions: [...]}}]")
        ats = []
        for i, stage in enumerate(self.stages):
            errors += _stage_errors(f"{where}.stages[{i}]", stage, i, self.unit, context)
            if (
                isinstance(stage, dict)
                and isinstance(stage.get("at"), (int, float))
                and not isinstance(stage["at"], bool)
            ):
                ats.append(stage["at"])
        if ats and len(ats) == len(self.stages):
            if ats[0] != 0:
                errors.append(f"{where}.stages[0].at: expected 0 (the first stage starts the run), got {ats[0]}")
            errors += [
                f"{where}.stages[{i}].at: expected more than the stage before's {ats[i - 1]}, got {ats[i]}"
                for i in range(1, len(ats))
                if ats[i] <= ats[i - 1]
            ]
        if errors:
            raise ConfigError("\n".join(errors))

    def stage_algorithm(self, index: int) -> tuple[type[DomainAlgorithm[Any]], AlgorithmParams] | None:
        """Stage ``index``'s algorithm class and typed params (None for a proportions stage)."""
        spec = self.stages[index].get("algorithm")
        if spec is None:
            return None
        cls = available_algorithms()[spec["name"]]
        return cls, build_params(
            cls.Params, spec.get("params") or {}, f"schedule.params.stages[{index}].algorithm.params"
        )


def _stage_errors(key: str, stage: Any, index: int, unit: str, context: ValidationContext | None) -> list[str]:
    """Every problem of one stage entry, each a line naming its key."""
    if not isinstance(stage, dict):
        return [f"{key}: expected a mapping {{at, proportions}} or {{at, algorithm}}, got {stage!r}"]
    errors = [f"{key}.{k}: unknown key; expected one of {list(_STAGE_KEYS)}" for k in stage if k not in _STAGE_KEYS]
    at = stage.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
        errors.append(f"{key}.at: expected a number ≥ 0, got {at!r}")
    elif unit == "fraction" and at >= 1:
        errors.append(f"{key}.at: expected a fraction of max_steps in [0, 1) (unit: fraction), got {at}")
    elif unit != "fraction" and at != int(at):
        errors.append(f"{key}.at: expected a whole number of {unit}s, got {at}")
    if ("proportions" in stage) == ("algorithm" in stage):
        errors.append(f"{key}: expected exactly one of 'proportions' and 'algorithm'")
    elif "proportions" in stage:
        errors += _proportions_errors(f"{key}.proportions", stage["proportions"], index, context)
    else:
        errors += _algorithm_errors(f"{key}.algorithm", stage["algorithm"], context)
    return errors


def _proportions_errors(key: str, value: Any, index: int, context: ValidationContext | None) -> list[str]:
    if value == LEARNED:
        return [f"{key}: 'learned' keeps the p of the stage before; the first stage has none"] if index == 0 else []
    try:
        as_distribution(value, key)
    except (ConfigError, TypeError, ValueError):
        return [f"{key}: expected '{LEARNED}' or finite non-negative numbers with a positive sum, got {value!r}"]
    if context is not None and len(value) != context.num_domains:
        return [f"{key}: expected {context.num_domains} values (one per domain), got {len(value)}"]
    return []


def _algorithm_errors(key: str, spec: Any, context: ValidationContext | None) -> list[str]:
    if not isinstance(spec, dict) or not set(spec) <= {"name", "params"}:
        return [f"{key}: expected a mapping with 'name' (and 'params'), got {spec!r}"]
    table = available_algorithms()
    # the stage's sampling is the objective: an importance-mode algorithm's p is not (its loss is reweighted)
    usable = sorted(n for n, c in table.items() if n != "schedule" and c.mode == "objective")
    if spec.get("name") not in usable:
        return [
            f"{key}.name: expected an algorithm whose sampling is the objective, one of {usable}, got {spec.get('name')!r}"
        ]
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        return [f"{key}.params: expected a mapping, got {params!r}"]
    try:
        build_params(table[spec["name"]].Params, params, f"{key}.params", context)
    except ConfigError as err:
        return str(err).splitlines()
    return []


@register_algorithm
class Schedule(DomainAlgorithm[ScheduleParams]):
    """p by stage: fixed, interpolated, frozen from what was learned, or an online algorithm's."""

    name = "schedule"
    description = (
        "Staged mixtures by step, fraction of the run or tokens (step or linear), stages that hand over to "
        "an online algorithm or keep what it learned."
    )
    Params = ScheduleParams
    mode = "objective"
    scores_label = "training loss (window mean), or the stage algorithm's scores"
    state_attributes = ("stage", "learned", "inner_stage", "inner_init")

    @classmethod
    def provider_specs(cls, params: AlgorithmParams) -> list[ProviderSpec]:
        """What the stages' algorithms need (each once)."""
        specs: list[ProviderSpec] = []
        for i in range(len(params.stages)):  # type: ignore[attr-defined]
            found = params.stage_algorithm(i)  # type: ignore[attr-defined]
            if found is not None:
                specs += [
                    ProviderSpec(s.name, s.params, f"SCHEDULE (stage {i}: {found[0].name})")
                    for s in found[0].provider_specs(found[1])
                    if s.name not in {x.name for x in specs}
                ]
        return specs

    @classmethod
    def needs_updates(cls, params: AlgorithmParams) -> bool:
        """Only a stage algorithm updates: fixed stages are planned, not updated."""
        return any("algorithm" in stage for stage in params.stages)  # type: ignore[attr-defined]

    def setup(self) -> Weights | None:
        self.starts: list[int] = []  # S_i, once bound
        self.stage = 0  # the stage of the latest planned step
        self.learned: dict[str, list[float]] = {}  # a 'learned' stage's frozen proportions, by stage index
        self.inner: DomainAlgorithm[Any] | None = None
        self.inner_stage, self.inner_init = -1, None  # the stage the inner algorithm runs, its start p
        first = self.params.stages[0].get("proportions")
        return Weights(sampling=as_distribution(first, "schedule.params.stages[0].proportions")) if first else None

    def on_bind(self) -> Weights | None:
        self.starts = []
        for i, stage in enumerate(self.params.stages):
            self.starts.append(self._to_steps(i, stage["at"]))
        late = [i for i, s in enumerate(self.starts) if self.max_steps is not None and s >= self.max_steps]
        if late:
            logger.warning("schedule: stage(s) %s start after the run's %d steps and never run", late, self.max_steps)
        return None

    def _to_steps(self, index: int, at: float) -> int:
        unit, key = self.params.unit, f"schedule.params.stages[{index}].at"
        if unit == "fraction":
            if self.max_steps is None:
                raise ConfigError(f"{key}: unit fraction needs the run's max_steps, which this run does not know")
            steps = round(at * self.max_steps)
        elif unit == "tokens":
            if not self.tokens_per_step:
                raise ConfigError(
                    f"{key}: unit tokens needs the tokens of a step (B × cutoff_len), which this run does not know"
                )
            steps = math.ceil(at / self.tokens_per_step)
        else:
            steps = int(at)
        if self.starts and steps <= self.starts[-1]:
            raise ConfigError(
                f"{key}: {at} {unit} is step {steps}, not after the stage before's step {self.starts[-1]}"
            )
        return steps

    # ---- the schedule ---------------------------------------------------------------------
    def stage_of(self, step: int) -> int:
        """The stage holding optimizer step ``step`` (1-based): the last i with S_i < step."""
        return max(0, bisect.bisect_left(self.starts, step) - 1)

    def _last_step(self, stage: int) -> float:
        return self.starts[stage + 1] if stage + 1 < len(self.starts) else math.inf

    def planned_sampling(self, step: int) -> np.ndarray | None:
        """p for ``step`` (module docstring); None inside an algorithm stage after its first step."""
        i = self.stage_of(step)
        self.stage = i
        stage = self.params.stages[i]
        if "algorithm" in stage:
            if self.inner_stage == i:
                return None  # the algorithm's updates move p
            return self._start_inner(i, self.sampling_weights)
        self.inner, self.inner_stage, self.inner_init = None, -1, None
        if stage["proportions"] == LEARNED and str(i) not in self.learned:
            self.learned[str(i)] = self.sampling_weights.tolist()  # what the stage before left in force
        p = self._proportions(i)
        nxt = self.params.stages[i + 1] if i + 1 < len(self.params.stages) else None
        if self.params.interpolation == "linear" and nxt is not None and nxt.get("proportions", LEARNED) != LEARNED:
            frac = (step - self.starts[i] - 1) / (self.starts[i + 1] - self.starts[i])
            p = (1.0 - frac) * p + frac * self._proportions(i + 1)
        return p

    def _proportions(self, index: int) -> np.ndarray:
        value = self.params.stages[index]["proportions"]
        return np.asarray(self.learned[str(index)] if value == LEARNED else as_distribution(value, "proportions"))

    def _start_inner(self, index: int, init: np.ndarray) -> np.ndarray:
        """Build stage ``index``'s algorithm from ``init`` (the p in force); its starting p."""
        found = self.params.stage_algorithm(index)
        assert found is not None
        inner = build_algorithm(
            found[0].name,
            self.domain_names,
            found[1],
            init_weights=init,
            where=f"schedule.params.stages[{index}].algorithm",
        )
        if self.batch_size is not None:
            inner.bind(self.batch_size, self.max_steps, self.tokens_per_step, self.lead)
        self.inner, self.inner_stage, self.inner_init = inner, index, np.asarray(init).tolist()
        return inner.sampling_weights

    def _inner_weights(self, weights: Weights | None, step: int) -> Weights | None:
        """The inner algorithm's change at ``step``, its p kept only where it is drawn inside its stage."""
        if weights is None or self.inner is None:
            return None
        inside = weights.sampling is not None and step + self.lead <= self._last_step(self.inner_stage)
        return Weights(sampling=self.inner.sampling_weights if inside else None, scores=self.inner.scores)

    def observe(self, stats: DomainStats, step: int) -> Weights | None:
        if self.inner is not None and self.stage_of(step) == self.inner_stage:
            return self._inner_weights(self.inner.apply_observe(stats, step), step)
        return None

    def update(self, stats: DomainStats, step: int) -> Weights:
        if self.inner is not None and self.stage_of(step) == self.inner_stage:
            changed = self._inner_weights(self.inner.apply_update(stats, step), step)
            return changed if changed is not None else Weights()
        # a fixed stage learns nothing; the scores keep per-domain losses in the log
        return Weights(scores=stats.mean_token_loss.cpu().numpy())

    def describe(self) -> list[str] | None:
        """One line per stage: its steps and its p (or algorithm)."""
        lines = []
        for i, stage in enumerate(self.params.stages):
            end = self._last_step(i)
            steps = f"steps {self.starts[i] + 1}–{end if self.max_steps is None else min(end, self.max_steps)}"
            if "algorithm" in stage:
                what = f"{stage['algorithm']['name']}, from the p in force"
            elif stage["proportions"] == LEARNED:
                what = "the p in force when it begins (learned), frozen"
            else:
                what = ", ".join(f"{n} {w:.4f}" for n, w in zip(self.domain_names, self._proportions(i)))
                nxt = self.params.stages[i + 1] if i + 1 < len(self.params.stages) else None
                if (
                    self.params.interpolation == "linear"
                    and nxt is not None
                    and nxt.get("proportions", LEARNED) != LEARNED
                ):
                    what += f", moving linearly to stage {i + 1}'s"
            lines.append(f"stage {i} ({steps.replace('inf', 'end')}): {what}")
        return lines

    def log_fields(self, from_step: int) -> dict[str, Any]:
        return {"stage": self.stage_of(from_step)}

    def summary(self) -> dict[str, Any] | None:
        """The stages with the step each starts at (1-based), and the stage now."""
        stages = []
        for i, (start, stage) in enumerate(zip(self.starts, self.params.stages)):
            entry: dict[str, Any] = {"from_step": start + 1}
            if "algorithm" in stage:
                entry["algorithm"] = stage["algorithm"]["name"]
            else:  # a learned stage's proportions once it began
                entry.update(
                    proportions=self.learned.get(str(i), stage["proportions"]), learned=stage["proportions"] == LEARNED
                )
            stages.append(entry)
        return {"stage": self.stage, "stages": stages}

    # ---- checkpoint state: the schedule's own plus the running stage algorithm's ----------------
    def state_dict(self) -> dict[str, Any]:
        return with_inner(super().state_dict(), self.inner)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state, inner = split_inner(state)
        super().load_state_dict(state)
        self.inner = None
        if self.inner_stage >= 0:
            if inner is None or self.inner_init is None:
                raise ResumeError("schedule state: a stage algorithm runs but its state is missing")
            self._start_inner(self.inner_stage, np.asarray(self.inner_init))
            assert self.inner is not None
            self.inner.load_state_dict(inner)
