"""``mixflow plot RUN_DIR``: weights and per-domain losses over training steps, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixflow.utils.jsonlog import read_jsonl


def find_weights_log(run_dir: Path) -> Path:
    """The run's ``<algorithm>_weights.jsonl`` (exactly one is expected)."""
    logs = sorted(p for p in run_dir.glob("*_weights.jsonl") if not p.name.endswith(".superseded.jsonl"))
    if not logs:
        raise FileNotFoundError(f"run_dir: no *_weights.jsonl in {run_dir} (is it a mixflow output_dir?)")
    if len(logs) > 1:
        raise ValueError(f"run_dir: several weights logs in {run_dir}: {[p.name for p in logs]}; keep one per run")
    return logs[0]


def _history_series(run_dir: Path, prefix: str, suffix: str = "") -> dict[str, list[tuple[int, float]]]:
    """``<prefix><domain><suffix>`` series from the Trainer's log history, if the run saved one."""
    # The run's final state first, else the newest checkpoint's (older ones hold a prefix of it).
    candidates = [run_dir / "trainer_state.json"] + sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"),
        key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit() else -1,
        reverse=True,
    )
    state_file = next((p for p in candidates if p.is_file()), None)
    series: dict[str, list[tuple[int, float]]] = {}
    if state_file is None:
        return series
    with open(state_file, encoding="utf-8") as f:
        history = json.load(f).get("log_history", [])
    for entry in history:
        for key, value in entry.items():
            if key.startswith(prefix) and key.endswith(suffix) and isinstance(value, (int, float)):
                name = key[len(prefix) : len(key) - len(suffix)]
                series.setdefault(name, []).append((int(entry["step"]), float(value)))
    return series


def weight_range(records: list[dict[str, Any]]) -> tuple[float, float]:
    """A fixed y range for weights: [0, 1] for distributions (a 0.4994–0.5006 axis would make a
    constant look dramatic), [0, 1.1·max] for loss weights above 1."""
    top = max(max(_num(v) for v in r["domain_weights"]) for r in records)
    return 0.0, 1.0 if top <= 1 else 1.1 * top


def scores_label(algorithm: str) -> str:
    """What the algorithm's ``perdomain_scores`` are (declared on its class)."""
    from mixflow.algorithms.registry import available_algorithms

    cls = available_algorithms().get(algorithm)
    return cls.scores_label if cls is not None else "per-domain score"


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a PNG of the weights log (and training losses when available); return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: not a directory: {run_dir}")
    log = find_weights_log(run_dir)
    records: list[dict[str, Any]] = list(read_jsonl(log))
    if not records:
        raise ValueError(f"{log}: no updates logged yet")
    names = records[-1]["domain_names"]
    steps = [r["step"] for r in records]
    algorithm = log.name[: -len("_weights.jsonl")]
    panels = {"weights": None, "scores": None}
    losses = _history_series(run_dir, "mix/loss/")
    val = {n: v for n, v in _history_series(run_dir, "eval_", "_loss").items() if n in names}
    if losses:
        panels["training loss"] = losses
    if val:
        panels["validation loss"] = val
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.0 * len(panels)), sharex=True)
    for i, name in enumerate(names):
        axes[0].plot(steps, [r["domain_weights"][i] for r in records], marker="o", ms=3, label=name)
        axes[1].plot(steps, [_num(r["perdomain_scores"][i]) for r in records], marker="o", ms=3, label=name)
        for ax, series in zip(axes[2:], list(panels.values())[2:]):
            if name in series:
                xs, ys = zip(*series[name])
                ax.plot(xs, ys, label=name)
    axes[0].set_ylim(*weight_range(records))
    axes[0].set_ylabel("domain weight")
    axes[0].set_title(f"{algorithm} on {run_dir.name}: weights and per-domain statistics")
    axes[1].set_ylabel(scores_label(algorithm), fontsize="small")
    for ax, title in zip(axes[2:], list(panels)[2:]):
        ax.set_ylabel(title + (" (mix/loss)" if title == "training loss" else ""))
    axes[-1].set_xlabel("training step")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    fig.tight_layout()
    out_path = Path(out) if out is not None else run_dir / f"{algorithm}_weights.png"
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
