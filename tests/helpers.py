"""Shared builders for tests: tiny models from a config, tiny tokenized domains, a test algorithm."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.statistics import DomainStats
from mixflow.algorithms.weights import Weights
from mixflow.data.packing import TokenizedDomain

VOCAB = 48
#: The `model_config` of the tiny Llama that end-to-end tests train through `mixflow train`.
TINY_MODEL = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}


def tiny_training_args(out, **overrides):
    """TrainingArguments of a tiny CPU run: 4 rows × 2 accumulation steps, plain SGD at a constant
    0.05, 4 steps, a log line every step, no checkpoints, no reports (``overrides`` replace any)."""
    from transformers import TrainingArguments

    keys = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**keys, **overrides})


def tiny_llama(seed: int = 0, vocab: int = VOCAB, tied: bool = False):
    """A 2-layer Llama-style causal LM small enough to train in milliseconds on CPU (``tied``: the
    output head shares the input embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


def tiny_domains(sizes=(40, 24, 16), length=12, packed=True, seed=0) -> list[TokenizedDomain]:
    """Domains of random tokens; domain d uses a distinct token band so losses differ by domain.
    Unpacked domains get variable lengths, so batches need padding."""
    rng = np.random.default_rng(seed)
    out = []
    for d, n in enumerate(sizes):
        lo, hi = 1 + d * 10, 1 + (d + 1) * 10 + d * 6
        if packed:
            rows = rng.integers(lo, min(hi, VOCAB), size=(n, length)).astype(np.int32)
        else:
            rows = [
                rng.integers(lo, min(hi, VOCAB), size=int(rng.integers(3, length + 1))).astype(np.int32)
                for _ in range(n)
            ]
        val = rng.integers(lo, min(hi, VOCAB), size=(4, length)).astype(np.int32)
        out.append(TokenizedDomain(name=f"d{d}", train=rows, val=val if packed else list(val)))
    return out


@dataclass
class FollowLossParams(AlgorithmParams):
    eta: float = 1.0
    """step size"""


@register_algorithm
class FollowLoss(DomainAlgorithm[FollowLossParams]):
    """Test algorithm: exponentiated-gradient on the window's mean loss (a DoReMi-like update without a
    reference), so weights move every update and trajectories can be compared across runs."""

    name = "test_follow_loss"
    description = "test only"
    Params = FollowLossParams
    mode = "objective"

    def update(self, stats: DomainStats, step: int) -> Weights:
        loss = stats.mean_token_loss.numpy()
        loss = np.where(np.isnan(loss), 0.0, loss)
        logits = np.log(self.sampling_weights) + self.params.eta * loss
        p = np.exp(logits - logits.max())
        return Weights(sampling=0.9 * p / p.sum() + 0.1 / self.num_domains, scores=loss)


#: Bytes of the buffer :func:`reused_buffer_faults` allocates again and again (over 32 MiB, the
#: largest block a default glibc ever serves from its heap).
PROBE_BYTES = 48 * 2**20
#: Pages of 4 KiB that :func:`reused_buffer_faults` touches after its first buffer.
PROBE_PAGES = 8 * PROBE_BYTES // 4096


def reused_buffer_faults() -> int:
    """Minor page faults of allocating, filling and freeing a 48 MiB buffer 8 times after a first
    one (what a training step does with its logits): near 0 where freed memory stays in the process."""
    import resource

    np.ones(PROBE_BYTES // 4, dtype=np.float32)  # the first one may fault: the pages are new
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        np.ones(PROBE_BYTES // 4, dtype=np.float32)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
