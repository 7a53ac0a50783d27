"""The arena's run config on the corpus: its precision, attention and evaluations."""

from __future__ import annotations

from mixflow.bench.arena_compute import evaluations
from mixflow.bench.lm_arena import base_config


def test_bfloat16_on_the_cpu_trains_with_the_eager_attention_and_float32_keeps_the_default():
    cpu_bf16 = base_config("tok", 800, "cache", bf16=True)
    assert cpu_bf16["bf16"] is True and cpu_bf16["model_config"]["attn_implementation"] == "eager"
    fp32 = base_config("tok", 800, "cache")
    assert fp32["bf16"] is False and "attn_implementation" not in fp32["model_config"]
    cuda = base_config("tok", 800, "cache", use_cpu=False, bf16=True)
    assert cuda["bf16"] is True and "attn_implementation" not in cuda["model_config"]
    assert cpu_bf16["model_config"] is not fp32["model_config"]  # each config its own, never shared


def test_the_last_evaluation_is_at_the_last_step_so_the_results_reuse_it():
    for steps in (800, 30, 4):
        every = base_config("tok", steps, "cache")["eval_steps"]
        assert steps % every == 0 and evaluations(steps, every) == steps // every
    assert evaluations(800, base_config("tok", 800, "cache")["eval_steps"]) == 5
