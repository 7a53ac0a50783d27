"""What an arena's runs cost in matrix products: the linear layers' count and the floor it sets."""

from __future__ import annotations

import json

import pytest
import torch

from mixflow.bench.arena_compute import (
    arena_floor,
    compute_floor,
    cpu_bf16_is_faster,
    eval_every,
    evaluations,
    linear_macs_per_token,
    matmul_rate,
)

LLAMA = {
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def test_the_linear_layers_are_counted_per_layer_and_the_head_once():
    # q, k, v, o: 4 · 128²; gate, up, down: 3 · 128 · 344; two layers; the head 128 · 2048
    assert linear_macs_per_token(LLAMA, 2048) == 2 * (4 * 128 * 128 + 3 * 128 * 344) + 128 * 2048
    grouped = {**LLAMA, "num_key_value_heads": 2}  # k and v as wide as 2 heads of 32
    assert linear_macs_per_token(grouped, 2048) == 2 * (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 344) + 128 * 2048


def test_the_floor_counts_a_training_token_three_passes_and_divides_by_the_busy_cores():
    floor = compute_floor(10**6, {"trained": 10**6, "evaluated": 10**6, "scored": 2 * 10**6}, rate=1e11, cores=2)
    # 6e12 + 2e12 + 4e12 FLOPs at 1e11 FLOP/s on each of 2 cores: 60 s
    assert floor["linear-layer TFLOP"] == {"training": 6.0, "evaluations": 2.0, "scoring": 4.0}
    assert floor["floor minutes (linear layers only)"] == 1.0 and floor["fp32 matmul GFLOP/s of one thread"] == 100.0


def test_a_run_evaluates_every_eval_steps_and_at_its_last_step():
    assert evaluations(800, 133) == 7 and evaluations(800, 160) == 5 and evaluations(10, 100) == 1


@pytest.mark.parametrize("steps", [800, 803, 30, 7, 6, 4, 1])
def test_an_arena_run_evaluates_at_most_five_times_and_at_its_last_step_where_five_divide_it(steps):
    every = eval_every(steps)
    assert evaluations(steps, every) <= 5
    assert steps % every == 0 or steps % 5 != 0
    assert evaluations(800, eval_every(800)) == 5 and eval_every(800) == 160  # the committed arena's


def test_the_matmul_rate_is_measured_on_one_thread_and_the_threads_are_restored():
    threads = torch.get_num_threads()
    assert matmul_rate(64, 32, 128, repeats=3, blocks=2) > 0
    assert matmul_rate(64, 32, 128, repeats=3, blocks=2, bf16=True) > 0
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(("bf16_rate", "chosen"), [(2.1e11, True), (1.5e11, True), (1.4e11, False), (0.5e11, False)])
def test_the_cpu_runs_use_bfloat16_only_where_it_multiplies_half_again_as_fast(monkeypatch, bf16_rate, chosen):
    from mixflow.bench import arena_compute

    monkeypatch.setattr(arena_compute, "matmul_rate", lambda *shape, bf16=False, **timing: bf16_rate if bf16 else 1e11)
    assert cpu_bf16_is_faster(1024, 128, 2048) is chosen


def test_a_best_static_mixture_that_is_a_baseline_is_counted_once(tmp_path, monkeypatch):
    from mixflow.bench import arena_compute
    from mixflow.bench.arena import BASELINES, BEST_STATIC

    monkeypatch.setattr(arena_compute, "scored_tokens", lambda tokenizer, split, domains: 10**8)
    monkeypatch.setattr(arena_compute, "matmul_rate", lambda rows, hidden, vocab, bf16=False: 2e11 if bf16 else 1e11)

    class _Arena:
        base = {
            "cutoff_len": 1024,
            "per_device_train_batch_size": 1024,
            "eval_steps": 5,
            "val_size": 512,
            "tokenizer": "byte",
            "model_config": {**LLAMA, "vocab_size": 2048},
        }
        steps, domains, jobs, test_dir, val_dir = 10, ["a", "b"], 2, tmp_path, tmp_path

    def run(steps, extra=0):
        return {"steps": steps, "extra_steps": extra, "curve": {"steps": [5, 10]}}

    runs = {b: [run(10)] for b in BASELINES}
    runs[BEST_STATIC] = runs["temperature"]  # its runs are temperature's
    runs["doremi"] = [run(10, extra=20)]
    setting = {"best static chosen": "temperature", "swarm runs": 3, "swarm steps": 30}
    floor = arena_floor(_Arena(), runs, setting)
    macs = linear_macs_per_token(LLAMA, 2048)
    trained = (4 * 10 + 30 + 30) * 1024 * 1024  # 4 baselines, DoReMi's 3 steps, the swarm; best static not again
    evaluated = (5 * 2 + 3 * 2) * 512 * 2 * 1024  # 2 evaluations a run: 5 scoring runs and 3 swarm runs
    scored = (5 + 3) * 10**8
    assert floor["linear-layer TFLOP"] == {
        "training": round(6 * macs * trained / 1e12, 1),
        "evaluations": round(2 * macs * evaluated / 1e12, 1),
        "scoring": round(2 * macs * scored / 1e12, 1),
    }
    total = (6 * trained + 2 * evaluated + 2 * scored) * macs
    assert floor["floor minutes (linear layers only)"] == pytest.approx(round(total / 2e11 / 60, 1))
    assert floor["fp32 matmul GFLOP/s of one thread"] == 100.0
    assert floor["linear-layer TFLOP"]["training"] > 100  # so a run counted twice would show
    json.dumps(floor)  # it goes into the result's JSON as it is
    _Arena.base["bf16"] = True  # runs under bfloat16 autocast: the floor at the bfloat16 rate
    fast = arena_floor(_Arena(), runs, setting)
    assert fast["bf16 matmul GFLOP/s of one thread"] == 200.0
    assert fast["floor minutes (linear layers only)"] == pytest.approx(round(total / 4e11 / 60, 1))


def test_a_scoring_pass_reads_every_document_and_its_eos(tmp_path):
    from mixflow.bench.arena_compute import scored_tokens
    from mixflow.data.tokenizer import load_tokenizer

    domains = {"a": ["ab", "cde"], "b": ["fghi"]}
    for name, texts in domains.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    info = {name: {"file_name": f"{name}.jsonl", "columns": {"prompt": "text"}} for name in domains}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    # the byte tokenizer: one token a character, then EOS
    assert scored_tokens(load_tokenizer("byte"), tmp_path, ["a", "b"]) == (2 + 1) + (3 + 1) + (4 + 1)
