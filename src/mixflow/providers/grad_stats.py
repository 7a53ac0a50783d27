"""Per-domain gradient statistics on a parameter subset (the group-split estimator of PiKE, Li et al. 2025, arXiv 2502.06244; docs/algorithms/pike.md).

PiKE and VA need, per domain k, the squared norm of the mean gradient ‖∇L_k‖² and the per-sample
gradient variance σ_k². On the micro-batches of a step that ends with an update, the provider
deals each domain's samples of the *global* batch round-robin into ``grad_groups`` groups (a
sample's group is its position among the domain's samples of the step, counted over micro-batches
and ranks in the sampler's order, so the groups do not depend on how the batch is split) and takes
the gradient of each group's summed per-sample loss with respect to a parameter subset (one partial
backward per group part, on the training graph, no second forward). It returns *sums* that combine
exactly across micro-batches and ranks:

- ``grad_group_sum`` [K, G, d]: per group, Σ of its samples' gradients (count-sketched to d
  dimensions when the subset is larger than ``grad_sketch_dim``: the sketch is linear, so sums
  stay exact, and squared norms are preserved in expectation);
- ``grad_group_samples`` [K, G]: how many samples each group has.

After the all-reduce, :func:`mixflow.algorithms.statistics.gradient_sums` takes each group's mean
and its squared norm, and :func:`~mixflow.algorithms.statistics.gradient_moments` turns them into
(‖∇L_k‖², σ_k²): W ranks with A micro-batches each give the estimate of one process with the
whole global batch in one micro-batch. Cost per update: ``grad_groups × K'``
partial backward passes through the subset (K' = domains present per micro-batch), each running
from the loss down to the earliest parameter in the subset.

**Closed form for the output head (default subset).** For logits z = h·Wᵀ, the gradient of a group's
mean loss with respect to W is Σ_tokens c_t (softmax(z_t) − e_{y_t}) h_tᵀ (c_t: the token's share of
the group mean), so all groups of all domains follow from the head's inputs h (kept by a forward
hook) and the logits, with no backward at all: one softmax over the batch and one [V, T_g]·[T_g, H]
matmul per group. The head's gradients are sketched by :class:`RowSketch` (a count sketch over
the vocabulary rows), which commutes with that matmul: the residuals [T, V] are sketched to
[T, d1] first, so no [V, H] gradient is formed. It is used when the subset is a bias-free ``nn.Linear`` head and, on the first
batch, agrees with the autograd gradient (a tied head, logit scaling or soft-capping do not); else
the provider says why in one log line and uses autograd.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

import torch

from mixflow.algorithms.statistics import GRAD_GROUP_SAMPLES, GRAD_GROUP_SUM, GradStatsParams
from mixflow.data.keys import IGNORE_INDEX
from mixflow.errors import ConfigError
from mixflow.providers.base import BatchContext, ProviderContext, StatisticProvider, register_provider
from mixflow.utils.distributed import all_gather_varlen, is_sharded_tensor, local_rows

logger = logging.getLogger(__name__)


def _unwrap(model: Any) -> Any:
    # DDP and similar wrappers keep the real model under `.module`.
    return getattr(model, "module", model)


def output_head(model: Any) -> Any:
    """The model's output head, or None. A head that a LoRA run trains beside its adapters
    (``additional_target: lm_head``) is wrapped by peft around a trained copy: that copy is the head."""
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    copies = getattr(head, "modules_to_save", None)
    active = getattr(head, "active_adapter", None)
    return copies[active] if copies is not None and active in copies else head


def select_parameters(model: Any, patterns: list[str] | None) -> list[torch.nn.Parameter]:
    """Trainable parameters whose names match any glob pattern; None: the output head."""
    inner = _unwrap(model)
    if patterns is None:
        head = output_head(model)
        if head is None:
            raise ConfigError("grad_params: the model has no output head; give parameter name patterns")
        trained = [p for p in head.parameters() if p.requires_grad]
        if not trained:
            raise ConfigError(
                "grad_params: the output head is frozen (finetuning_type: lora trains the adapters only); set "
                "grad_params to adapter parameters, e.g. ['*lora_B*'], or train the head (additional_target: lm_head)"
            )
        return trained
    chosen = [
        p for n, p in inner.named_parameters() if p.requires_grad and any(fnmatch.fnmatch(n, pat) for pat in patterns)
    ]
    if not chosen:
        names = [n for n, _ in inner.named_parameters()][:8]
        raise ConfigError(f"grad_params: no trainable parameter matches {patterns}; names look like {names}")
    return chosen


class CountSketch:
    """A fixed linear map R^D → R^d with E‖Sv‖² = ‖v‖² (identity when D ≤ d)."""

    def __init__(self, dim_in: int, dim_out: int, seed: int = 0) -> None:
        self.dim_in, self.dim_out = dim_in, dim_out
        self.exact = dim_out <= 0 or dim_in <= dim_out
        if not self.exact:
            g = torch.Generator().manual_seed(seed)
            self.bucket = torch.randint(0, dim_out, (dim_in,), generator=g)
            self.sign = torch.randint(0, 2, (dim_in,), generator=g).to(torch.float64) * 2 - 1

    @property
    def out_dim(self) -> int:
        return self.dim_in if self.exact else self.dim_out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = v.to(torch.float64)
        if self.exact:
            return v
        out = torch.zeros(self.dim_out, dtype=torch.float64, device=v.device)
        return out.index_add_(0, self.bucket.to(v.device), v * self.sign.to(v.device))


class RowSketch:
    """A count sketch over the *rows* of a [V, H] matrix, R^{V·H} → R^{d1·H} with d1 = dim // H
    (identity when V·H ≤ dim). It preserves squared norms in expectation like :class:`CountSketch`,
    and commutes with the head's gradient: S·(Rᵀh) = (R·Sᵀ)ᵀh, so residuals [T, V] are sketched
    to [T, d1] before the matmul and no [V, H] gradient is ever formed."""

    def __init__(self, rows: int, cols: int, dim: int, seed: int = 0) -> None:
        self.rows, self.cols = rows, cols
        self.exact = dim <= 0 or rows * cols <= dim
        self.buckets = rows if self.exact else max(1, dim // cols)
        if not self.exact:
            g = torch.Generator().manual_seed(seed)
            self.bucket = torch.randint(0, self.buckets, (rows,), generator=g)
            self.sign = torch.randint(0, 2, (rows,), generator=g).to(torch.float64) * 2 - 1

    @property
    def out_dim(self) -> int:
        return self.buckets * self.cols

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """Sketch a flattened [V, H] gradient."""
        m = v.to(torch.float64).reshape(self.rows, self.cols)
        return self.residuals(m.T).T.reshape(-1)

    def residuals(self, r: torch.Tensor) -> torch.Tensor:
        """[..., V] → [..., d1]: the sketch applied along the last (vocabulary) dimension."""
        if self.exact:
            return r
        return r @ self.dense(r.device, r.dtype)

    def dense(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The sketch as a [V, d1] matrix with one ±1 per row (a matmul beats a scatter over V)."""
        cached = getattr(self, "_dense", None)
        if cached is None or cached.device != device or cached.dtype != dtype:
            cached = torch.zeros(self.rows, self.buckets, device=device, dtype=dtype)
            cached[torch.arange(self.rows), self.bucket] = self.sign.to(dtype)
            self._dense = cached
        return cached

    def softmax_residuals(
        self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, lse: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sketched w_t·(softmax(z_t) − e_{y_t}) for logits [T, V], targets [T], weights [T]: [T, d1],
        the one-hot part subtracted after the sketch (it is one ±1 per row there). ``lse`` (the rows'
        log-sum-exp, when known) makes the softmax one exp pass."""
        z = logits.float()
        p = torch.softmax(z, dim=-1) if lse is None else torch.exp(z - lse.float()[:, None])
        r = self.residuals(p)
        rows = torch.arange(r.shape[0], device=r.device)
        if self.exact:
            r[rows, targets] -= 1.0
        else:
            r[rows, self.bucket.to(r.device)[targets]] -= self.sign.to(device=r.device, dtype=r.dtype)[targets]
        return r * weights.to(r.dtype)[:, None]


class GradientStatistics(StatisticProvider):
    """The ``grad_stats`` provider; configured by the algorithm's ``grad_params``, ``grad_groups``
    and ``grad_sketch_dim`` params."""

    name = "grad_stats"

    def __init__(self, patterns: list[str] | None = None, groups: int = 2, sketch_dim: int = 4096) -> None:
        if groups < 2:
            raise ConfigError(f"grad_groups: expected an integer >= 2 (a variance needs two groups), got {groups}")
        self.patterns = patterns
        self.groups = groups
        self.sketch_dim = sketch_dim
        self._params: list[torch.nn.Parameter] | None = None
        self._sketch: CountSketch | RowSketch | None = None
        #: Whether the head's closed form is used: None until checked on the first batch it applies to.
        self._closed_form: bool | None = False
        #: The output head's input of the latest forward (kept by a forward hook).
        self._head_input: torch.Tensor | None = None
        self._warned_unattached = False
        #: The global batch whose micro-batches are being grouped, and each domain's samples dealt so far in it.
        self._batch: int | None = None
        self._dealt: torch.Tensor | None = None

    def _setup(self, model: Any) -> None:
        if self._params is None:
            self._params = select_parameters(model, self.patterns)
            head = output_head(model) if self.patterns is None else None
            closed = isinstance(head, torch.nn.Linear) and head.bias is None
            # After the forward a sharded parameter is a DTensor outside the autograd graph (FSDP2
            # differentiates its gathered copy), so only statistics from activations can be computed.
            if any(is_sharded_tensor(p) for p in self._params) and not closed:
                raise ConfigError(
                    "grad_params: these parameters are sharded (FSDP), where mixflow computes gradient "
                    "statistics only for an untied, bias-free output head, from its activations; "
                    "remove grad_params"
                )
            if closed and isinstance(head, torch.nn.Linear):
                self._closed_form = None  # decided on the first batch
                head.register_forward_pre_hook(self._keep_head_input)
                # one sketch for both paths, so every group's vector lives in the same space
                self._sketch = RowSketch(head.weight.shape[0], head.weight.shape[1], self.sketch_dim)
            else:
                self._sketch = CountSketch(sum(p.numel() for p in self._params), self.sketch_dim)

    def attach(self, model: Any) -> None:
        self._setup(model)

    def _keep_head_input(self, module: Any, args: tuple[Any, ...]) -> None:
        self._head_input = args[0].detach()

    def _groups(self, ctx: BatchContext) -> list[tuple[int, int, torch.Tensor]]:
        """(domain, group, local sample indices) of every group part in this micro-batch.

        Every rank sees the domains of the micro-batch on all ranks (one small all-gather), so it
        knows each of its samples' position among the domain's samples of the step so far, in the
        order one process would see the global batch (micro-batch, then rank, then row); the
        sample goes to group position mod G."""
        if ctx.batch_index != self._batch or self._dealt is None:
            self._batch, self._dealt = ctx.batch_index, torch.zeros(ctx.num_domains, dtype=torch.long)
        ids = torch.where(ctx.losses.token_count > 0, ctx.domain_ids, -1).long().cpu()  # -1: no target token
        every, start = all_gather_varlen(ids)
        position = torch.full_like(every, -1)
        for d in range(ctx.num_domains):
            rows = torch.nonzero(every == d).flatten()
            position[rows] = self._dealt[d] + torch.arange(rows.numel())
            self._dealt[d] += rows.numel()
        group = position[start : start + ids.numel()] % self.groups
        device = ctx.domain_ids.device
        out = []
        for d in range(ctx.num_domains):
            for g in range(self.groups):
                part = torch.nonzero((ids == d) & (group == g)).flatten()
                if part.numel():
                    out.append((d, g, part.to(device)))
        return out

    def _autograd_gradient(self, ctx: BatchContext, part: torch.Tensor) -> torch.Tensor:
        assert self._params is not None
        grads = torch.autograd.grad(ctx.losses.mean[part].sum(), self._params, retain_graph=True, allow_unused=True)
        return torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, self._params)]
        )

    def _head_gradients(
        self, ctx: BatchContext, groups: list[tuple[int, int, torch.Tensor]]
    ) -> list[torch.Tensor] | None:
        """The head's gradient of every group part's summed loss in closed form, already sketched, or None
        where the closed form does not apply."""
        hidden, logits, labels = self._head_input, ctx.losses.logits, ctx.labels
        if (
            hidden is None
            or logits is None
            or labels is None
            or labels.dim() != 2
            or hidden.shape[:2] != logits.shape[:2]
        ):
            return None
        rows, first = local_rows(_unwrap(ctx.model).get_output_embeddings().weight.detach())
        probe = hidden[0, -1].float() @ rows.float().T
        if not torch.allclose(probe, logits[0, -1, first : first + len(rows)].detach().float(), rtol=1e-3, atol=1e-3):
            return None  # the kept input is not this batch's (or logits are post-processed): autograd
        mask = ctx.losses.token_mask
        if ctx.losses.token_losses.shape[1] != labels.shape[1]:  # shifted: position t predicts label t+1
            logits, hidden, labels = logits[:, :-1], hidden[:, :-1], labels[:, 1:]
        labels = labels.to(logits.device)
        # c_t = 1 / n_j on the sample's target tokens (the sample's mean loss; summed over the part)
        per_token = mask / ctx.losses.token_count.clamp_min(1)[:, None]
        assert isinstance(self._sketch, RowSketch)
        out = []
        for _, _, part in groups:
            z = logits[part].detach().reshape(-1, logits.shape[-1])
            target = torch.where(labels[part] == IGNORE_INDEX, 0, labels[part]).reshape(-1)
            weight = per_token[part].reshape(-1)
            keep = mask[part].reshape(-1)
            # the training loss is lse − z_y: its log-sum-exp comes back for free where a token counts
            # (elsewhere the row's max keeps exp finite; its weight is 0)
            picked = z.gather(1, target[:, None]).squeeze(1).float()
            lse = ctx.losses.token_losses[part].detach().reshape(-1).float() + picked
            if not bool(keep.all()):
                lse[~keep] = z[~keep].float().amax(-1)
            r = self._sketch.softmax_residuals(z, target, weight, lse)  # [T, d1]
            h = hidden[part].reshape(-1, hidden.shape[-1])
            out.append((r.T @ h.to(r.dtype)).double().reshape(-1))
        return out

    def batch_statistics(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        if not ctx.update_pending or ctx.model is None or not torch.is_grad_enabled():
            return {}
        self._setup(ctx.model)
        assert self._params is not None and self._sketch is not None
        k, device = ctx.num_domains, ctx.losses.token_loss_sum.device
        group_sum = torch.zeros(k, self.groups, self._sketch.out_dim, dtype=torch.float64, device=device)
        samples = torch.zeros(k, self.groups, dtype=torch.float64, device=device)
        parts = self._groups(ctx)
        vectors = self._head_gradients(ctx, parts) if self._closed_form is not False and parts else None
        if vectors is not None and self._closed_form is None:
            self._closed_form = self._agrees(ctx, parts[0][2], vectors[0])
        if vectors is None and parts and any(is_sharded_tensor(p) for p in self._params):
            if self._head_input is not None:
                raise ConfigError(
                    "grad_stats: the sharded (FSDP) output head's logits are not its input times its "
                    "weight (scaled or capped logits), so its gradients cannot be computed from activations"
                )
            if not self._warned_unattached:  # the hook came too late for this batch: skip it, never fake it
                logger.warning(
                    "grad_stats: no gradient statistics from the first micro-batch: the output head is "
                    "sharded and its inputs are kept from the next forward on (call "
                    "StepEngine.attach_model(model) before training to include it)"
                )
                self._warned_unattached = True
            parts, vectors = [], []  # zero groups: the algorithm sees no estimate, not a zero gradient
        if vectors is None or not self._closed_form:
            vectors = [self._sketch(self._autograd_gradient(ctx, part)) for _, _, part in parts]
        for (d, g, part), v in zip(parts, vectors):
            group_sum[d, g] += v
            samples[d, g] += part.numel()
        return {GRAD_GROUP_SUM: group_sum, GRAD_GROUP_SAMPLES: samples}

    def _agrees(self, ctx: BatchContext, part: torch.Tensor, closed: torch.Tensor) -> bool:
        """Whether the closed-form head gradient equals autograd's on one group (checked once, sketched).
        A sharded head has no autograd gradient here: there the logits probe (no scaling, no capping)
        and an untied head must do."""
        assert self._sketch is not None and self._params is not None
        if any(is_sharded_tensor(p) for p in self._params):
            inner = _unwrap(ctx.model)
            embeddings = inner.get_input_embeddings() if hasattr(inner, "get_input_embeddings") else None
            tied = embeddings is not None and getattr(embeddings, "weight", None) is self._params[0]
            if tied:
                raise ConfigError(
                    "grad_stats: the output head is tied to the input embeddings and sharded (FSDP); "
                    "its gradient statistics need an untied head (tie_word_embeddings: false)"
                )
            return True
        exact = self._sketch(self._autograd_gradient(ctx, part)).to(closed.dtype)
        ok = bool(torch.linalg.vector_norm(closed - exact) <= 1e-3 * torch.linalg.vector_norm(exact) + 1e-12)
        if not ok:
            logger.info(
                "grad_stats: the output head's closed-form gradient differs from autograd's (a tied or "
                "scaled head); using one partial backward per group"
            )
        else:
            logger.info(
                "grad_stats: the output head's gradients in closed form (equal to autograd's on the first batch)"
            )
        return ok


@register_provider("grad_stats")
def _build(params: Any, context: ProviderContext | None) -> GradientStatistics:
    if not isinstance(params, GradStatsParams):
        raise TypeError(
            f"grad_stats: the algorithm's params must derive from GradStatsParams, got {type(params).__name__}"
        )
    return GradientStatistics(patterns=params.grad_params, groups=params.grad_groups, sketch_dim=params.grad_sketch_dim)
