"""DoReMi end to end on the demo corpus with tiny sizes: the seed's three step-by-step YAMLs with
`mixflow train`, the seed's weights-analysis snippet on our log, and `mixflow doremi` from one config."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mixflow.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOMAINS = ["code", "prose", "arithmetic", "random"]

#: Tiny sizes for the examples (the configs themselves are unchanged).
TINY = [
    "cutoff_len=32",
    "val_size=2",
    "per_device_train_batch_size=4",
    "model_config.hidden_size=32",
    "model_config.intermediate_size=64",
    "model_config.num_hidden_layers=1",
    "model_config.num_attention_heads=2",
    "model_config.num_key_value_heads=2",
    "warmup_steps=0",
    "logging_steps=2",
    "disable_tqdm=true",
]

# The weights-analysis snippet of the DoReMi pipeline's user documentation, verbatim.
SEED_SNIPPET = """
import json

# 读取权重日志
weights_history = []
with open('doremi_step2_result/doremi_weights.jsonl', 'r') as f:
    for line in f:
        weights_history.append(json.loads(line))

# 获取最终权重
final_weights = weights_history[-1]['domain_weights']
domain_names = weights_history[-1]['domain_names']

print("优化后的领域权重:")
for name, weight in zip(domain_names, final_weights):
    print(f"  {name}: {weight:.4f}")

# 可视化权重变化趋势
import matplotlib.pyplot as plt
import numpy as np

steps = [entry['step'] for entry in weights_history]
weights_matrix = np.array([entry['domain_weights'] for entry in weights_history])

plt.figure(figsize=(10, 6))
for i, name in enumerate(domain_names):
    plt.plot(steps, weights_matrix[:, i], label=name, marker='o')

plt.xlabel('Training Step')
plt.ylabel('Domain Weight')
plt.title('DoReMi Domain Weight Evolution')
plt.legend()
plt.grid(True)
plt.savefig('doremi_weights_evolution.png')
plt.show()
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working directory laid out like the repository root: examples/ and build/demo/data."""
    ws = tmp_path_factory.mktemp("doremi_ws")
    (ws / "examples").symlink_to(EXAMPLES, target_is_directory=True)
    assert main(["data", "demo", str(ws / "build" / "demo" / "data"), "--max-bytes", "30000", "--quiet"]) == 0
    return ws


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_seed_step_by_step_configs_run_one_after_another(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    # Step 1: the reference, where examples/components.yaml's doremi entry expects it.
    assert main(["train", "examples/doremi_step1_static.yaml", *TINY, "max_steps=4", "update_step=2", "--quiet"]) == 0
    step1 = workspace / "build" / "doremi_steps" / "step1"
    assert (step1 / "config.json").is_file()
    assert all(np.allclose(r["sampling_weights"], 0.25) for r in _jsonl(step1 / "static_weights.jsonl"))

    # Step 2: the proxy reads step 1's model; its output_dir is the seed snippet's directory.
    overrides = ["max_steps=6", "warmup_step=2", "update_step=2", "output_dir=doremi_step2_result"]
    assert main(["train", "examples/doremi_step2_dynamic.yaml", *TINY, *overrides, "--quiet"]) == 0
    step2 = workspace / "doremi_step2_result"
    records = _jsonl(step2 / "doremi_weights.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        assert r["domain_names"] == DOMAINS
        assert sum(r["domain_weights"]) == pytest.approx(1.0) and min(r["domain_weights"]) >= 1e-3 / 4
        assert np.allclose(r["sampling_weights"], 0.25)  # the proxy samples uniformly
        assert all(s is not None and s >= 0 for s in r["perdomain_scores"])  # λ: clipped excess
    summary = json.loads((step2 / "doremi_summary.json").read_text())
    assert summary["num_updates"] == 3 and summary["reference_model_path"] == "build/doremi_steps/step1"
    assert np.allclose(summary["average"], np.mean([r["domain_weights"] for r in records], axis=0))
    assert summary["weights"] == summary["average"]

    # The seed's analysis snippet reads our log unchanged.
    import matplotlib

    matplotlib.use("Agg")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(SEED_SNIPPET, "seed_004_snippet", "exec"), {})
    printed = out.getvalue().splitlines()
    assert printed[0] == "优化后的领域权重:"
    assert printed[1:] == [f"  {n}: {w:.4f}" for n, w in zip(DOMAINS, records[-1]["domain_weights"])]
    assert (workspace / "doremi_weights_evolution.png").read_bytes()[:4] == b"\x89PNG"

    # Step 3: the target on the learned weights, given as an override.
    weights = json.dumps(summary["weights"])
    assert (
        main(
            [
                "train",
                "examples/doremi_step3_static.yaml",
                *TINY,
                "max_steps=4",
                "update_step=2",
                f"init_mixture_proportions={weights}",
                "--quiet",
            ]
        )
        == 0
    )
    step3 = workspace / "build" / "doremi_steps" / "step3"
    for r in _jsonl(step3 / "static_weights.jsonl"):
        assert np.allclose(r["sampling_weights"], summary["weights"])


def test_mixflow_doremi_runs_the_three_steps_from_one_config(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    assert (
        main(
            [
                "doremi",
                "examples/doremi.yaml",
                *TINY,
                "output_dir=pipe",
                "max_steps=4",
                "update_step=2",
                "proxy.warmup_step=2",
                "proxy.update_step=1",
                "doremi.output_weights=last",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "DoReMi: 3 update(s); the target trained on the last weights" in out
    for name in DOMAINS:
        assert any(line.startswith(name) for line in out.splitlines())

    root = workspace / "pipe"
    assert (root / "reference" / "config.json").is_file()
    summary = json.loads((root / "proxy" / "doremi_summary.json").read_text())
    assert summary["reference_model_path"] == str(Path("pipe") / "reference")
    log = _jsonl(root / "proxy" / "doremi_weights.jsonl")
    assert [r["step"] for r in log] == [2, 3, 4]
    assert summary["weights"] == summary["last"] == log[-1]["domain_weights"]
    target = _jsonl(root / "target" / "static_weights.jsonl")
    assert target and all(np.allclose(r["sampling_weights"], summary["last"]) for r in target)
    result = json.loads((root / "doremi_pipeline.json").read_text())
    assert result["target_weights"] == summary["last"] and result["reference_weights"] == [0.25] * 4
    assert set(result["metrics"]["target"]["val_loss"]) == set(DOMAINS)
    for name, w in zip(DOMAINS, summary["last"]):
        assert f"{w:9.4f}" in next(line for line in out.splitlines() if line.startswith(name))
    # a rerun that resumes keeps every finished step and trains only what is missing
    import shutil

    kept = {step: (root / step / "mixflow_results.json").stat().st_mtime_ns for step in ("reference", "proxy")}
    shutil.rmtree(root / "target")  # as if killed during the target step
    assert (
        main(
            [
                "doremi",
                "examples/doremi.yaml",
                *TINY,
                "output_dir=pipe",
                "max_steps=4",
                "update_step=2",
                "proxy.warmup_step=2",
                "proxy.update_step=1",
                "doremi.output_weights=last",
                "resume_from_checkpoint=true",
                "--quiet",
            ]
        )
        == 0
    )
    assert {step: (root / step / "mixflow_results.json").stat().st_mtime_ns for step in kept} == kept
    assert json.loads((root / "target" / "mixflow_results.json").read_text())["steps"] == 4
    assert json.loads((root / "doremi_pipeline.json").read_text())["target_weights"] == summary["last"]
    # mixflow plot on the pipeline's folder draws its three steps
    assert main(["plot", str(root)]) == 0
    assert (root / "doremi_pipeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["target.learning_rat=0.1"], "target: learning_rat: unknown key (did you mean 'learning_rate'?)"),
        (["init_mixture_proportions=[1, 1, 1, 1]"], "init_mixture_proportions: give it in the reference: section"),
        (["target.init_mixture_proportions=[1, 1, 1, 1]"], "target.init_mixture_proportions: the target's mixture"),
        (["proxy.component_name=static"], "proxy.component_name: set by the doremi pipeline"),
        (["doremi.reference_model_path=x"], "doremi.reference_model_path: set by the pipeline"),
        (["doremi.reweight_eps=3"], "proxy: doremi.params.reweight_eps: expected a number in [0, 1], got 3.0"),
        (
            ["proxy.max_steps=1", "proxy.warmup_step=2"],
            "proxy: warmup_step/update_step: doremi's first update would be at step 2, after max_steps 1",
        ),
        (["reference.init_mixture_proportions=[1, 1]"], "reference: init_mixture_proportions: expected 4 values"),
    ],
)
def test_pipeline_config_errors_stop_before_anything_trains(workspace, monkeypatch, capsys, overrides, message):
    monkeypatch.chdir(workspace)
    assert main(["doremi", "examples/doremi.yaml", "output_dir=bad", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mixflow: error: {message}") and "\n" not in err
    assert not (workspace / "bad").exists()
