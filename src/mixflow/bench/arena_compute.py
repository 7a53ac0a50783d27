"""What an arena's runs cost in matrix products, and the floor that puts on its time on this machine.

Counted: the linear layers' multiply-adds (a Llama's q, k, v, o, gate, up, down and its head) over
every token trained (a step is three passes' worth: the forward and a backward of twice its cost),
evaluated and scored, at 2 FLOPs each; timed at the rate one torch thread reaches on the model's
largest product (the head's) in the precision the runs multiply in (bfloat16 under autocast, else
float32), with every core busy. Not counted: attention scores, norms, the
loss's softmax, the optimizer, Python, and the methods' own extra passes (DoReMi's reference
forwards, Aioli's held-out losses, PiKE's and VA's gradient statistics). So it is a floor on the
arena's time, not an estimate: what no implementation of these runs on this machine can go under.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def linear_macs_per_token(model_config: dict[str, Any], vocab: int) -> int:
    """Multiply-adds per token of a Llama's linear layers: attention's q, k, v, o and the MLP's gate,
    up and down in every layer (k and v as wide as the key-value heads), then the head."""
    h, inner = int(model_config["hidden_size"]), int(model_config["intermediate_size"])
    heads = int(model_config["num_attention_heads"])
    kv = int(model_config.get("num_key_value_heads", heads)) * (h // heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inner
    return int(model_config["num_hidden_layers"]) * per_layer + h * vocab


def matmul_rate(rows: int, hidden: int, vocab: int, repeats: int = 20, blocks: int = 10, bf16: bool = False) -> float:
    """FLOP/s of one torch thread on ``[rows, hidden] · [hidden, vocab]`` in float32, or bfloat16
    with ``bf16`` (the head's product: the largest, so the fastest per FLOP): the best of ``blocks``
    timings of ``repeats`` products each, after a warm-up. The best, because a floor wants the peak: a
    shared or virtual machine's core runs slower at moments (this one measured 63–98 GFLOP/s within
    minutes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        a, b = torch.randn(rows, hidden, dtype=dtype), torch.randn(hidden, vocab, dtype=dtype)
        for _ in range(5):
            a @ b
        best = math.inf
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2.0 * rows * hidden * vocab * repeats / best


#: How much faster than float32 one thread must multiply in bfloat16 for the CPU runs to use it.
BF16_SPEEDUP = 1.5


def cpu_bf16_is_faster(rows: int, hidden: int, vocab: int, speedup: float = BF16_SPEEDUP) -> bool:
    """Whether one thread multiplies the head's product at least ``speedup`` × as fast in bfloat16 as
    in float32. A CPU with bfloat16 instructions (AVX-512 BF16, AMX) doubles the rate (2.1× on the
    Zen 4 cores the committed arena ran on); one without them emulates bfloat16, slower than float32.
    The two rates differ by 2× or not at all, so a threshold between them decides the same way on
    every call, whatever the moment's speed of a shared core."""
    fp32 = matmul_rate(rows, hidden, vocab, repeats=5, blocks=3)
    return matmul_rate(rows, hidden, vocab, repeats=5, blocks=3, bf16=True) >= speedup * fp32


def scored_tokens(tokenizer: Any, split_dir: Path, domains: Sequence[str]) -> int:
    """Tokens one scoring pass reads in ``split_dir``: the stream :func:`~mixflow.bench.arena_runs.split_losses`
    scores, every document of every domain and its EOS."""
    from mixflow.bench.arena_runs import document_stream
    from mixflow.data.sources import iter_documents, sources_from_dataset_info

    return sum(
        len(document_stream(tokenizer, iter_documents(source)))
        for source in sources_from_dataset_info(split_dir, list(domains))
    )


def compute_floor(
    macs_per_token: int,
    tokens: dict[str, int],
    rate: float,
    cores: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The linear layers' TFLOPs of the ``tokens`` trained, evaluated and scored (``{"trained",
    "evaluated", "scored"}``) and their minutes at ``rate`` FLOP/s on each of ``cores`` busy cores
    (``rate``: one thread's on the head's product, in ``precision``)."""
    flops = {
        "training": 6.0 * macs_per_token * tokens["trained"],
        "evaluations": 2.0 * macs_per_token * tokens["evaluated"],
        "scoring": 2.0 * macs_per_token * tokens["scored"],
    }
    return {
        "linear-layer TFLOP": {k: round(v / 1e12, 1) for k, v in flops.items()},
        f"{precision} matmul GFLOP/s of one thread": round(rate / 1e9, 1),
        "floor minutes (linear layers only)": round(sum(flops.values()) / (rate * max(1, cores)) / 60, 1),
    }


#: The periodic evaluations of an arena run (its curve's points), the last at its last step.
EVALUATIONS = 5


def eval_every(max_steps: int, count: int = EVALUATIONS) -> int:
    """``eval_steps`` for at most ``count`` evaluations of a run, the last at its last step where
    ``count`` divides the steps (the run's results then reuse it instead of evaluating again)."""
    return max(1, -(-max_steps // count))


def evaluations(max_steps: int, eval_steps: int) -> int:
    """The periodic evaluations of a run: every ``eval_steps`` and one at its last step."""
    return math.ceil(max_steps / max(1, eval_steps))


def arena_floor(arena: Any, runs: dict[str, list[dict[str, Any]]], setting: dict[str, Any]) -> dict[str, Any]:
    """:func:`compute_floor` of an arena on the CPU: its scoring ``runs`` (a best static mixture that
    is a baseline counted once: they are that baseline's runs) and its swarm (``setting``'s ``swarm
    runs`` and ``swarm steps``), each scored once, on ``arena.jobs`` cores."""
    from mixflow.bench.arena import BASELINES, BEST_STATIC
    from mixflow.data.tokenizer import load_tokenizer

    base = arena.base
    shared = setting["best static chosen"] in BASELINES
    scoring = [r for method, results in runs.items() if not (shared and method == BEST_STATIC) for r in results]
    row = int(base["cutoff_len"])
    steps = sum(int(r["steps"]) + int(r.get("extra_steps") or 0) for r in scoring) + int(setting["swarm steps"])
    evaluated = sum(len(r["curve"]["steps"]) for r in scoring) + int(setting["swarm runs"]) * evaluations(
        arena.steps, int(base["eval_steps"])
    )
    tokenizer, domains = load_tokenizer(str(base["tokenizer"])), arena.domains
    tokens = {
        "trained": steps * int(base["per_device_train_batch_size"]) * row,
        "evaluated": evaluated * int(base["val_size"]) * len(domains) * row,
        "scored": len(scoring) * scored_tokens(tokenizer, arena.test_dir, domains)
        + int(setting["swarm runs"]) * scored_tokens(tokenizer, arena.val_dir, domains),
    }
    model = base["model_config"]
    vocab = int(model.get("vocab_size") or tokenizer.vocab_size)  # the model's: the tokenizer's unless set
    bf16 = bool(base.get("bf16"))
    rate = matmul_rate(int(base["per_device_train_batch_size"]) * row, int(model["hidden_size"]), vocab, bf16=bf16)
    return compute_floor(linear_macs_per_token(model, vocab), tokens, rate, arena.jobs, "bf16" if bf16 else "fp32")
