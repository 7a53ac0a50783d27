"""``run_training``'s final metrics: the evaluation of the last step is not run twice."""

from __future__ import annotations

import json
from types import SimpleNamespace

from mixflow.cli.main import main
from mixflow.recipes.train import _last_step_evaluation
from tests.cli.test_cli import _config, demo_data  # noqa: F401 (fixture)


def _trainer(history, step=6, best_at_end=False):
    return SimpleNamespace(
        state=SimpleNamespace(global_step=step, log_history=history),
        args=SimpleNamespace(load_best_model_at_end=best_at_end),
    )


def test_the_last_steps_logged_evaluation_is_reused_only_when_it_covers_every_set():
    history = [
        {"eval_a_loss": 9.0, "step": 3},
        {"eval_a_loss": 1.5, "eval_a_runtime": 0.1, "step": 6},
        {"eval_b_loss": 2.5, "step": 6},
        {"train_loss": 3.0, "step": 6},
    ]
    assert _last_step_evaluation(_trainer(history), {"a": 0, "b": 0}) == {
        "eval_a_loss": 1.5,
        "eval_a_runtime": 0.1,
        "eval_b_loss": 2.5,
    }
    assert _last_step_evaluation(_trainer(history), {"a": 0, "b": 0, "c": 0}) is None  # c not evaluated there
    assert _last_step_evaluation(_trainer(history, step=7), {"a": 0, "b": 0}) is None  # trained on since
    assert _last_step_evaluation(_trainer(history, best_at_end=True), {"a": 0, "b": 0}) is None  # another model


def test_a_run_evaluating_at_its_last_step_reports_that_evaluation_without_a_second(tmp_path, demo_data, monkeypatch):  # noqa: F811
    from transformers import Trainer

    loops = []
    original = Trainer.evaluation_loop

    def counted(self, *args, **kwargs):
        loops.append(kwargs.get("metric_key_prefix", args[-1] if args else ""))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluation_loop", counted)
    cfg = _config(tmp_path, demo_data, eval_strategy="steps", eval_steps=4)
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert len(loops) == 2 * 4  # steps 4 and 6 (the Trainer's own last-step evaluation), 4 domains each
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    last = {
        k[len("eval_") : -len("_loss")]: v
        for e in state["log_history"]
        if e["step"] == 6
        for k, v in e.items()
        if k.endswith("_loss") and k.startswith("eval_")
    }
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    assert results["val_loss"] == last and set(last) == {"code", "prose", "arithmetic", "random"}
