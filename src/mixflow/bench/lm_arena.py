"""``lm-arena``: every domain-level method on the same language-modelling corpus, same model, same steps.

The offline demo corpus (code, prose, arithmetic, random bytes), the demo's 4-layer Llama with an
untied head (PiKE/VA measure its gradients), byte tokens, ``cutoff_len`` 64, the same number of
target steps for every method, each trained exactly as ``mixflow train`` trains it (documented
defaults, the update steps of ``examples/``). DoReMi runs its three steps (``mixflow doremi``);
its reference and proxy compute is reported apart from the target's. Metrics: mean and worst
per-domain validation loss (also without the pure-noise ``random`` domain), the steps a method
needs to reach uniform's final mean validation loss, seconds per step, and the weights over steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixflow.bench.base import BenchContext, BenchResult, Row, register_benchmark
from mixflow.config.load import load_config
from mixflow.data.demo import build_demo_corpus
from mixflow.recipes.doremi import run_pipeline
from mixflow.recipes.train import run_training
from mixflow.utils.jsonlog import read_jsonl

DOMAINS = ["code", "prose", "arithmetic", "random"]
#: method: the keys that make it (on top of the shared ones).
METHODS: dict[str, dict[str, Any]] = {
    "uniform": {"train_type": "static", "mixture_sample_rule": "uniform"},
    "stratified": {"train_type": "static", "mixture_sample_rule": "stratified"},
    "temperature (τ = 3)": {"train_type": "static", "mixture_sample_rule": "temperature", "mixture_temperature": 3.0},
    "odm": {"component": {"name": "odm"}, "update_step": 1},
    "odm (printed exp3)": {"component": {"name": "odm", "params": {"rule": "exp3"}}, "update_step": 1},
    "pike": {"component": {"name": "pike"}, "update_step": 10},
    "balanced_pike": {"component": {"name": "balanced_pike"}, "update_step": 10},
    "fgls": {"component": {"name": "fgls"}, "update_step": 10},
    "erma": {"component": {"name": "erma"}, "update_step": 10},
    "va": {"component": {"name": "va"}, "update_step": 10},
    "erma + va": {"component": {"name": "va", "params": {"loss_weights_from": {"name": "erma"}}}, "update_step": 10},
    "loss reweighting": {"train_type": "dynamic_weight", "mixture_sample_rule": "uniform",
                         "component": {"name": "loss"}},
    # the documented recipe, with its rule for short runs: burn-in = max_steps / 10 (set in train_method)
    "loss reweighting (language_model preset)": {"train_type": "dynamic_weight", "mixture_sample_rule": "uniform",
                                                 "component": {"name": "loss", "params": {"preset": "language_model"}}},
}


def _shared(data: Path, steps: int, seed: int, tiny: bool) -> dict[str, Any]:
    return {
        "dataset": ",".join(DOMAINS), "dataset_dir": str(data), "cutoff_len": 64, "val_size": 0.05,
        "max_samples": 60 if tiny else None,
        "model_config": {"model_type": "llama", "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 64,
                         "tie_word_embeddings": False},
        "per_device_train_batch_size": 16, "learning_rate": 2.0e-3, "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, steps // 30), "max_steps": steps, "logging_steps": max(1, steps // 10),
        "eval_strategy": "steps", "eval_steps": max(1, steps // 6), "per_device_eval_batch_size": 64,
        "save_strategy": "no", "report_to": "none", "seed": seed, "data_seed": 0, "dataloader_num_workers": 0,
        "use_cpu": True, "disable_tqdm": True, "overwrite_output_dir": True,  # the benchmark's own scratch runs
    }


def _history(out: Path) -> tuple[list[int], list[float], float]:
    """(eval steps, mean validation loss at each, seconds per training step) from trainer_state.json."""
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    by_step: dict[int, dict[str, float]] = {}
    runtime = float("nan")
    for entry in state["log_history"]:  # the Trainer logs each evaluated domain as its own entry
        for d in DOMAINS:
            if f"eval_{d}_loss" in entry:
                by_step.setdefault(int(entry["step"]), {})[d] = float(entry[f"eval_{d}_loss"])
        if "train_runtime" in entry:
            runtime = float(entry["train_runtime"]) / max(1, int(entry["step"]))
    steps = sorted(s for s, losses in by_step.items() if len(losses) == len(DOMAINS))
    return steps, [float(np.mean(list(by_step[s].values()))) for s in steps], runtime


def _metrics(result: dict[str, Any], out: Path) -> dict[str, Any]:
    val = result["val_loss"]
    steps, curve, per_step = _history(out)
    clean = [val[d] for d in DOMAINS if d != "random"]
    return {"mean val loss": float(np.mean([val[d] for d in DOMAINS])), "worst-domain val loss": float(max(val.values())),
            "mean val loss without random": float(np.mean(clean)), "worst val loss without random": float(max(clean)),
            "seconds per step": per_step, "curve": (steps, curve), "weights": _weights(out)}


def _weights(out: Path) -> list[tuple[int, list[float]]]:
    logs = [p for p in out.glob("*_weights.jsonl") if not p.name.endswith(".superseded.jsonl")]
    return [(r["step"], r["domain_weights"]) for r in read_jsonl(logs[0])] if logs else []


def _short_run_burn_in(keys: dict[str, Any], steps: int) -> dict[str, Any]:
    """The language_model preset's documented rule for runs far shorter than its 1000-step burn-in."""
    params = keys.get("component", {}).get("params", {})
    if params.get("preset") != "language_model" or "burn_in_steps" in params:
        return keys
    component = {**keys["component"], "params": {**params, "burn_in_steps": max(1, steps // 10)}}
    return {**keys, "component": component}


def train_method(root: Path, name: str, keys: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    out = root / name.replace(" ", "_").replace("(", "").replace(")", "").replace("=", "")
    keys = _short_run_burn_in(keys, int(shared["max_steps"]))
    raw = {**shared, "train_type": "dynamic_mix", **keys, "output_dir": str(out)}
    return _metrics(run_training(load_config(raw=raw), progress=False), out)


def train_doremi(root: Path, shared: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """DoReMi's three steps, then loss reweighting on top of its weights (same target steps)."""
    # the sampling keys belong to a step's section (the pipeline refuses them at the shared level)
    pipeline = {**shared, "output_dir": str(root / "doremi"), "reference": {"mixture_sample_rule": "uniform"},
                "proxy": {"warmup_step": 2, "update_step": 5} if shared["max_steps"] < 20 else
                {"warmup_step": 10, "update_step": 5}, "doremi": {}}
    path = root / "doremi.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    result = run_pipeline(path, progress=False)
    target = _metrics(result["metrics"]["target"], Path(result["output_dirs"]["target"]))
    ref = _history(Path(result["output_dirs"]["reference"]))[2]
    proxy = _history(Path(result["output_dirs"]["proxy"]))[2]
    target["reference + proxy seconds per target step"] = (ref + proxy)
    target["weights"] = _weights(Path(result["output_dirs"]["proxy"]))
    on_top = {"train_type": "dynamic_weight", "mixture_sample_rule": "mixture",
              "init_mixture_proportions": result["target_weights"], "component": {"name": "loss"}}
    return {"doremi": target, "doremi + loss reweighting": train_method(root, "doremi_loss", on_top, shared)}


def _sizes(ctx: BenchContext) -> dict[str, Any]:
    if ctx.tiny:
        return {"steps": 6, "methods": ["uniform", "odm"], "doremi": True}
    # full: 150 target steps × 3 seeds (17 runs per seed), so make bench fits its 90-minute budget
    return {"steps": 120 if ctx.quick else 150, "methods": list(METHODS), "doremi": True}


def _steps_to(curve: tuple[list[int], list[float]], target: float) -> float:
    steps, means = curve
    return float(next((s for s, m in zip(steps, means) if m <= target), float("nan")))


@register_benchmark(
    "lm-arena",
    claim="on the demo corpus, which method gives the lowest mean and worst-domain validation loss for the same target "
    "steps, and how many fewer steps it needs to reach uniform's loss (DoReMi's headline: 2.6× fewer at 8B)",
    source="seeds 000–004, issue 7 (the arena)",
    seeds=3,
)
def run(ctx: BenchContext) -> BenchResult:
    s = _sizes(ctx)
    data = ctx.scratch / "lm-arena" / "data"
    build_demo_corpus(data, max_bytes_per_domain=40_000 if ctx.tiny else 400_000, seed=0, progress=False)
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in range(ctx.seeds):
        shared = _shared(data, s["steps"], seed, ctx.tiny)
        root = ctx.scratch / "lm-arena" / f"seed{seed}"
        for name in s["methods"]:
            ctx.log("lm-arena: seed %d/%d, %s", seed + 1, ctx.seeds, name)
            runs.setdefault(name, []).append(train_method(root, name, METHODS[name], shared))
        if s["doremi"]:
            ctx.log("lm-arena: seed %d/%d, doremi (reference, proxy, target) and doremi + loss reweighting", seed + 1, ctx.seeds)
            for name, metrics in train_doremi(root, shared).items():
                runs.setdefault(name, []).append(metrics)
    return _result(ctx, s, runs)


def _result(ctx: BenchContext, s: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> BenchResult:
    target = float(np.mean([r["curve"][1][-1] for r in runs["uniform"]]))
    rows = []
    for name, seeds in runs.items():
        for metric in ("mean val loss", "worst-domain val loss", "mean val loss without random",
                       "worst val loss without random", "seconds per step", "reference + proxy seconds per target step"):
            if metric in seeds[0]:
                rows.append(Row(name, metric, [float(r[metric]) for r in seeds]))
        rows.append(Row(name, "steps to uniform's final mean val loss", [_steps_to(r["curve"], target) for r in seeds]))
    plot = _plot_weights(ctx.out_dir / "lm-arena-weights.png", {n: r[0]["weights"] for n, r in runs.items()})
    result = BenchResult(setting={**{k: v for k, v in s.items() if k != "methods"}, "cutoff_len": 64,
                                  "model": "Llama 4×128, untied head, byte tokens", "batch": 16,
                                  "uniform's final mean val loss": target}, rows=rows, holds=None, verdict="",
                         plots=[plot.name] if plot else [])
    for name in runs:
        if name != "uniform":
            result.compare(name, "uniform", "mean val loss", "lower")
    ranked = sorted(runs, key=lambda n: result.mean(n, "mean val loss"))
    best = ranked[0]
    uni_steps = result.mean("uniform", "steps to uniform's final mean val loss")
    best_steps = result.mean(best, "steps to uniform's final mean val loss")
    result.verdict = (
        f"lowest mean validation loss: {best} {result.mean(best, 'mean val loss'):.3f} vs uniform "
        f"{result.mean('uniform', 'mean val loss'):.3f} (it reaches uniform's final loss in {best_steps:.0f} of "
        f"{uni_steps:.0f} steps); lowest worst-domain loss: "
        f"{min(runs, key=lambda n: result.mean(n, 'worst-domain val loss'))}; ranking: {', '.join(ranked)}."
    )
    better = [c.method for c in result.comparisons if c.verdict == "better"]
    result.verdict += (f" Paired by seed against uniform, {len(better)} of {len(result.comparisons)} methods have a mean "
                       f"validation loss lower with the whole 95% interval below 0: {', '.join(better) or 'none'}.")
    result.notes.append("steps are measured at the evaluation steps (every max_steps/6); a seed that never reaches the "
                        "loss makes the mean undefined (–), never dropped")
    return result


def _plot_weights(path: Path, weights: dict[str, list[tuple[int, list[float]]]]) -> Path | None:
    """One panel per method: its logged domain weights over steps (seed 0)."""
    shown = {n: w for n, w in weights.items() if w}
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14, 2.8 * rows), squeeze=False, sharey=True)
    for ax, (name, records) in zip(axes.flat, shown.items()):
        steps = [r[0] for r in records]
        for d, domain in enumerate(DOMAINS):
            ax.plot(steps, [r[1][d] for r in records], label=domain)
        ax.set_title(name, fontsize="small")
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    fig.supxlabel("step")
    fig.supylabel("domain weight (logged)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
