"""Base types for algorithms.

Two kinds of component turn the knobs of docs/design.md:

- a :class:`DomainAlgorithm` observes per-domain statistics and produces *sampling weights* p
  (how often each domain is drawn) and/or *domain loss weights* w (how much each domain's loss
  counts);
- a :class:`SampleWeighter` produces *per-sample weights* s from the per-sample losses of a batch.

Both are pure math on small vectors and per-sample tensors: no torch.distributed, no
transformers, no file I/O, no autograd. The step engine (:mod:`mixflow.engine`) does the plumbing
(statistics, reductions across ranks, logs, checkpoints); the run builder (:mod:`mixflow.recipes`)
loads whatever an algorithm needs from disk and hands it over.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

import numpy as np
import torch

from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights, as_distribution, invalid_weights
from mixflow.errors import ConfigError, ResumeError

P = TypeVar("P", bound=AlgorithmParams)

#: How an algorithm's sampling weights relate to the objective (docs/design.md, "One training step").
#: ``objective``: the batch composition itself is the weighting, c_j = s_j.
#: ``importance``: sampling only reduces variance, c_j = (q_d / p_d) · s_j with q ∝ π ⊙ w, so the
#: gradient stays unbiased for Σ_i π_i w_i L_i.
Mode = Literal["objective", "importance"]


class InvalidWeights(ValueError):
    """Weights an algorithm returned that cannot be sampled from or weighted with."""


class ProviderSpec(NamedTuple):
    """One statistic provider an algorithm needs, with the params it is built from."""

    name: str
    """Registered provider name (``grad_stats``, ``reference_loss``, ``heldout_loss``, ...)."""
    params: AlgorithmParams
    """The params the provider reads its settings from."""
    owner: str
    """Who needs it, for messages (e.g. ``FGLS``, ``VA (loss_weights_from: erma)``)."""


class DomainAlgorithm(ABC, Generic[P]):
    """A domain-level algorithm: per-domain statistics in, sampling and/or loss weights out.

    Subclasses set the class attributes, define a ``Params`` dataclass (and name it as the type
    argument, ``DomainAlgorithm[MyParams]``, so ``self.params`` has its type) and implement
    :meth:`update`; :meth:`setup` initialises their own state (the constructor is shared). The
    contract: every hook that may change the weights (:meth:`setup`, :meth:`on_bind`,
    :meth:`update`) *returns* them as :class:`~mixflow.algorithms.weights.Weights`, and the base
    class applies them and counts the updates. Every other piece of evolving state lives in
    attributes listed in ``state_attributes`` (numpy arrays, numbers or lists), so that the default
    :meth:`state_dict` / :meth:`load_state_dict` capture it whole.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[AlgorithmParams]] = AlgorithmParams
    mode: ClassVar[Mode] = "objective"
    #: What ``perdomain_scores`` (``scores``) holds for this algorithm, for plots and readers (a
    #: class attribute; an instance may say more precisely, e.g. per rule).
    scores_label: str = "per-domain score"
    #: Names of statistic providers (:mod:`mixflow.providers`) whose sums this algorithm reads from
    #: ``DomainStats.extras``; the builder instantiates them from the same params.
    providers: ClassVar[tuple[str, ...]] = ()
    #: Attributes saved in checkpoints, beyond the base ones.
    state_attributes: ClassVar[tuple[str, ...]] = ()
    #: Whether an update may run *inside* its step, before the loss, so the step trains on the new
    #: weights (DoReMi's Algorithm 1). The step engine does so when one micro-batch is the whole
    #: step and no provider computes statistics at update time (held-out losses come after the
    #: step); otherwise the update runs after the step (a one-step lag), as for every other
    #: algorithm. Such an algorithm's ``observe`` runs after that update.
    update_before_loss: ClassVar[bool] = False

    def __init__(
        self,
        domain_names: Sequence[str],
        params: P,
        init_weights: Sequence[float] | np.ndarray,
        prior: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.domain_names = list(domain_names)
        self.params: P = params
        k = len(self.domain_names)
        init = as_distribution(init_weights, "init_mixture_proportions")
        if init.size != k:
            raise ConfigError(f"init_mixture_proportions: expected {k} values (one per domain), got {init.size}")
        self.prior = as_distribution(prior if prior is not None else np.ones(k), "prior")
        self._sampling = init.copy()
        self._loss_weights = np.ones(k, dtype=np.float64)
        self._scores = np.full(k, np.nan)
        self.num_updates = 0
        self._apply(self.setup())

    def setup(self) -> Weights | None:
        """Initialise the algorithm's own state (called at the end of the constructor; params are
        already validated), and return the starting weights where they are not ``init_weights``
        and ones. Default: nothing."""
        return None

    @classmethod
    def provider_specs(cls, params: AlgorithmParams) -> list[ProviderSpec]:
        """The statistic providers a run with these params needs (default: ``providers``, built from
        ``params``). The front door reads it at config load (e.g. ``heldout_loss`` needs a held-out
        split) and the step engine builds the providers from it."""
        return [ProviderSpec(name, params, cls.name.upper()) for name in cls.providers]

    @classmethod
    def needs_updates(cls, params: AlgorithmParams) -> bool:
        """Whether a run with these params changes its weights through :meth:`update` (the config
        check refuses such a run whose first update falls after max_steps). Default: True."""
        return True

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    # ---- what the step reads -------------------------------------------------------------
    @property
    def sampling_weights(self) -> np.ndarray:
        """p: the distribution the sampler draws domains from."""
        return self._sampling.copy()

    @property
    def loss_weights(self) -> np.ndarray:
        """w: per-domain loss weights (all ones when the algorithm does not weight the loss)."""
        return self._loss_weights.copy()

    @property
    def domain_weights(self) -> np.ndarray:
        """The weights this algorithm is about (logged as ``domain_weights``): p by default."""
        return self.sampling_weights

    @property
    def scores(self) -> np.ndarray:
        """Per-domain scores of the last update (logged as ``perdomain_scores``)."""
        return self._scores.copy()

    # ---- what the step calls ---------------------------------------------------------------
    #: The global batch size B, once :meth:`bind` ran (None in pure-math use without a sampler).
    batch_size: int | None = None
    #: The run's optimizer steps and the tokens of one step's rows (B × cutoff_len), where known.
    max_steps: int | None = None
    tokens_per_step: int | None = None
    #: Weights decided at the end of step s are drawn with from step s + lead (1 + the engine's
    #: ``mixture_plan_horizon``: the batches read ahead are already drawn).
    lead: int = 1

    def bind(
        self, batch_size: int, max_steps: int | None = None, tokens_per_step: int | None = None, lead: int = 1
    ) -> None:
        """Called once by the step engine with the sampler's global batch size B (and what it knows
        of the run's length): stored as attributes, then :meth:`on_bind`'s weights applied."""
        self.batch_size = int(batch_size)
        self.max_steps, self.tokens_per_step, self.lead = max_steps, tokens_per_step, int(lead)
        self._apply(self.on_bind())

    def on_bind(self) -> Weights | None:
        """What changes once B is known (rules that count samples per batch, e.g. a floor of b_i
        samples; their K·B checks already ran at config load). Default: nothing."""
        return None

    def observe(self, stats: DomainStats, step: int) -> Weights | None:
        """Called after every optimizer step with that step's (all-reduced) statistics. Weights it
        returns change between updates and go where an update's go (:meth:`apply_observe`): w from
        the next step, p from step ``step + self.lead``. Default: nothing changes."""
        return None

    def apply_observe(self, stats: DomainStats, step: int) -> Weights | None:
        """What the step engine calls after every step: :meth:`observe`, its weights (if any) checked
        and applied; :class:`InvalidWeights` when they cannot be used (nothing is applied then)."""
        weights = self.observe(stats, step)
        if weights is not None:
            self._apply(self._checked(weights, "observe"))
        return weights

    def update_due(self, step: int) -> bool | None:
        """Whether optimizer step ``step`` ends with an update, for an algorithm that keeps its own
        calendar (e.g. Aioli's rounds); None: the run's schedule decides (``warmup_step``,
        ``update_step``, ``update_times``). Default: None."""
        return None

    def planned_sampling(self, step: int) -> np.ndarray | Sequence[float] | None:
        """Sampling weights decided in advance for optimizer step ``step`` (1-based), or None to leave
        p as it is. The step engine asks for every step once, in order, ``lead`` steps ahead (before
        that step's batch is drawn), and the batch of step ``step`` is drawn with exactly these: a
        schedule is exact at every step, whatever the read-ahead. Default: None."""
        return None

    def take_planned(self, step: int) -> np.ndarray | None:
        """:meth:`planned_sampling` checked and applied (p then reads as the latest planned, normalised);
        None when it keeps p."""
        planned = self.planned_sampling(step)
        if planned is None:
            return None
        p = np.asarray(planned, dtype=np.float64)
        self._checked(Weights(sampling=p), f"planned_sampling({step})")
        self._apply(Weights(sampling=p / p.sum()))
        return p  # as given: the sampler normalises it once, as it did the initial p

    def describe(self) -> list[str] | None:
        """Lines the run summary prints about what this run's algorithm will do, once bound (e.g. a
        schedule's stages with their steps); None: its params, as given."""
        return None

    def log_fields(self, from_step: int) -> dict[str, Any]:
        """Extra fields of the weights-log line of weights drawn from step ``from_step`` (JSON-
        serialisable; e.g. a schedule's stage). Default: none."""
        return {}

    def _checked(self, weights: Weights, hook: str) -> Weights:
        if not isinstance(weights, Weights):
            raise TypeError(f"{self.name}.{hook} must return Weights, got {type(weights).__name__}")
        problem = invalid_weights(weights)
        if problem is not None:
            raise InvalidWeights(f"{self.name}.{hook}: {problem}")
        return weights

    def apply_update(self, stats: DomainStats, step: int) -> Weights:
        """What the step engine calls at each scheduled update: :meth:`update`, its weights applied
        and the update counted (the schedule's ``update_times`` counts them)."""
        weights = self.update(stats, step)
        if not isinstance(weights, Weights):
            raise TypeError(f"{self.name}.update must return Weights, got {type(weights).__name__}")
        self._apply(weights)
        self.num_updates += 1
        return weights

    @abstractmethod
    def update(self, stats: DomainStats, step: int) -> Weights:
        """The update rule, run with the statistics summed since the previous update: the new
        weights (``self.num_updates`` counts the updates before this one)."""

    def _apply(self, weights: Weights | None) -> None:
        if weights is None:
            return
        k = self.num_domains
        for field, value in (("sampling", weights.sampling), ("loss", weights.loss), ("scores", weights.scores)):
            if value is not None and np.shape(value) != (k,):
                raise ValueError(f"{self.name}: {field} weights of shape {np.shape(value)}, expected ({k},)")
        if weights.sampling is not None:
            self._sampling = np.array(weights.sampling, dtype=np.float64)
        if weights.loss is not None:
            self._loss_weights = np.array(weights.loss, dtype=np.float64)
        if weights.scores is not None:
            self._scores = np.array(weights.scores, dtype=np.float64)

    def summary(self) -> dict[str, Any] | None:
        """The algorithm's result so far (JSON-serialisable), or None. When defined, the engine writes it
        atomically to ``<output_dir>/<name>_summary.json`` after each successful update."""
        return None

    # ---- checkpoint state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: everything needed to continue the weight trajectory exactly."""
        names = ("_sampling", "_loss_weights", "_scores", "num_updates", *self.state_attributes)
        return {name: _to_plain(getattr(self, name)) for name in names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            current = getattr(self, name, None)
            if current is None and name not in self.state_attributes:
                raise ResumeError(f"{self.name} state: unknown entry {name!r}")
            if isinstance(current, np.ndarray):
                value = np.asarray(value, dtype=current.dtype)
                if value.shape != current.shape:
                    raise ResumeError(f"{self.name} state: {name} has shape {value.shape}, expected {current.shape}")
            setattr(self, name, value)


class SampleWeighter(ABC, Generic[P]):
    """Per-sample weights s from the per-sample losses of a batch (all ranks' samples together)."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[AlgorithmParams]] = AlgorithmParams
    state_attributes: ClassVar[tuple[str, ...]] = ()
    #: The task whose losses the weights are defined for (e.g. ``classification``: IMP's class
    #: probabilities); None: any. The front door checks it at config load.
    required_task: ClassVar[str | None] = None

    def __init__(self, domain_names: Sequence[str], params: P) -> None:
        self.domain_names = list(domain_names)
        self.params: P = params
        self.setup()

    def setup(self) -> None:
        """Initialise the weighter's own state (end of the constructor). Default: nothing."""

    def input_files(self) -> dict[str, str]:
        """Files the weighter reads, by kind (e.g. ``{"weights_cache": path}``): the run builder reads
        each with its reader for that kind and hands the results to :meth:`load_inputs` before
        training (this layer reads no file itself). Default: none."""
        return {}

    def load_inputs(self, inputs: dict[str, Any]) -> None:
        """Receive what :meth:`input_files` named, read (same keys). Default: nothing."""

    @abstractmethod
    def weights(
        self, losses: torch.Tensor, domain_ids: torch.Tensor, step: int, sample_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weights for the per-sample ``losses`` of a batch (shape [N], detached, all ranks' samples in
        rank order), scaled so that uniform weights are all 1. ``sample_ids`` are the samples' global
        row indices when the dataset provides them (for per-example cached weights)."""

    def state_dict(self) -> dict[str, Any]:
        return {name: _to_plain(getattr(self, name)) for name in self.state_attributes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            if name not in self.state_attributes:
                raise ResumeError(f"{self.name} state: unknown entry {name!r}")
            setattr(self, name, value)


def with_inner(state: dict[str, Any], inner: DomainAlgorithm[Any] | None) -> dict[str, Any]:
    """An algorithm's state with the state of the algorithm it runs inside (VA's loss weights, a
    schedule's stage) under ``inner``, when there is one."""
    return state if inner is None else {**state, "inner": inner.state_dict()}


def split_inner(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the algorithm's own state, the inner algorithm's or None): :func:`with_inner` undone."""
    own = dict(state)
    return own, own.pop("inner", None)


def _to_plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value
