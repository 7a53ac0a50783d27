"""``mixflow plot RUN_DIR``: weights and per-domain losses over training steps, as one PNG; on a
``mixflow doremi`` output folder, its three steps (reference, proxy weights with ᾱ, target)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixflow.engine.records import find_weights_log
from mixflow.errors import DataError
from mixflow.utils.jsonlog import read_jsonl


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
    return weight_limits(max(max(_num(v) for v in r["domain_weights"]) for r in records))


def weight_limits(top: float) -> tuple[float, float]:
    """:func:`weight_range` for the largest weight drawn."""
    return 0.0, 1.0 if top <= 1 else 1.1 * top


def scores_label(algorithm: str) -> str:
    """What the algorithm's ``perdomain_scores`` are (declared on its class)."""
    from mixflow.algorithms.registry import available_algorithms

    cls = available_algorithms().get(algorithm)
    return cls.scores_label if cls is not None else "per-domain score"


#: Above this many domains the plots name the ones whose weight peaks highest and group the rest.
NAMED_DOMAINS = 12


def domain_groups(names: list[str], records: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    """(label, domain indices) of each line: every domain, or with more than :data:`NAMED_DOMAINS`
    the ``NAMED_DOMAINS - 1`` whose weight peaks highest, then one group of the rest."""
    if len(names) <= NAMED_DOMAINS:
        return [(n, [i]) for i, n in enumerate(names)]
    peak = [max(_num(r["domain_weights"][i]) for r in records) for i in range(len(names))]
    top = sorted(sorted(range(len(names)), key=lambda i: -peak[i])[: NAMED_DOMAINS - 1])
    rest = [i for i in range(len(names)) if i not in set(top)]
    return [(names[i], [i]) for i in top] + [(f"the other {len(rest)} domains", rest)]


def _mean(values: Any) -> float:
    finite = [v for v in values if v == v]  # NaN: a domain with no score yet
    return sum(finite) / len(finite) if finite else float("nan")


def _group_series(series: dict[str, list[tuple[int, float]]], names: list[str]) -> tuple[list[int], list[float]]:
    """One line for ``names``: the series of a single domain, or the mean over the group at each step."""
    by_step: dict[int, list[float]] = {}
    for name in names:
        for step, value in series.get(name, []):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


#: Line styles and markers cycled over the domains: lines that coincide (equal weights) stay visible.
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 1)), "P"))


def _style(i: int) -> dict[str, Any]:
    line, marker = STYLES[i % len(STYLES)]
    return {"linestyle": line, "marker": marker, "ms": 4, "markevery": 0.1}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a PNG of the weights log (and training losses when available); return its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: not a directory: {run_dir}")
    if (run_dir / "doremi_pipeline.json").is_file():
        return plot_doremi(run_dir, out)
    plt = _pyplot()
    log = find_weights_log(run_dir)
    records: list[dict[str, Any]] = list(read_jsonl(log))
    if not records:
        raise DataError(f"{log}: no updates logged yet")
    names = records[-1]["domain_names"]
    steps = [r["step"] for r in records]
    # where a line says from which step its p is drawn, p is plotted from there, holding until the next
    drawn = [r.get("from_step", r["step"]) for r in records]
    held = {"drawstyle": "steps-post"} if any("from_step" in r for r in records) else {}
    algorithm = log.name[: -len("_weights.jsonl")]
    panels: dict[str, Any] = {"weights": None, "scores": None}
    losses = _history_series(run_dir, "mix/loss/")
    if losses and scores_label(algorithm).startswith("training loss"):
        del panels["scores"]  # the scores are the training losses the panel below shows
    val = {n: v for n, v in _history_series(run_dir, "eval_", "_loss").items() if n in names}
    if losses:
        panels["training loss"] = losses
    if val:
        panels["validation loss"] = val
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.0 * len(panels)), sharex=True)
    titles = list(panels)
    series_axes = [(ax, panels[t]) for ax, t in zip(axes, titles) if t not in ("weights", "scores")]
    for g, (label, idx) in enumerate(domain_groups(names, records)):
        # a group of many domains: their weights summed, their scores and losses averaged
        w = [sum(_num(r["domain_weights"][i]) for i in idx) for r in records]
        axes[0].plot(drawn, w, label=f"{label}{' (sum)' if len(idx) > 1 else ''} ({w[-1]:.3g})", **held, **_style(g))
        if "scores" in panels:
            axes[1].plot(
                steps, [_mean(_num(r["perdomain_scores"][i]) for i in idx) for r in records], label=label, **_style(g)
            )
        for ax, series in series_axes:
            xs, ys = _group_series(series, [names[i] for i in idx])
            if xs:
                ax.plot(xs, ys, label=label, **_style(g))
    axes[0].set_ylim(*weight_limits(max(float(line.get_ydata().max()) for line in axes[0].lines)))  # group sums too
    axes[0].set_ylabel("domain weight")
    axes[0].set_title(f"{algorithm} on {run_dir.name}: weights and per-domain statistics")
    if "scores" in panels:
        axes[1].set_ylabel(scores_label(algorithm), fontsize="small")
    for ax, title in zip(axes[len(axes) - len(series_axes) :], titles[len(titles) - len(series_axes) :]):
        ax.set_ylabel(title + (" (mix/loss)" if title == "training loss" else ""))
    axes[-1].set_xlabel("training step")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    mark_stages(axes, run_dir / f"{algorithm}_summary.json")
    axes[0].legend(loc="best", fontsize="small")
    fig.tight_layout()
    out_path = Path(out) if out is not None else run_dir / f"{algorithm}_weights.png"
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def mark_stages(axes: Any, summary: Path) -> None:
    """A schedule's stages (its summary's ``stages``) as dashed lines where each begins, labelled
    with the stage and what it trains on."""
    if not summary.is_file():
        return
    stages = json.loads(summary.read_text(encoding="utf-8")).get("stages") or []
    for i, stage in enumerate(stages):
        what = stage.get("algorithm") or ("learned" if stage.get("learned") else "fixed")
        for ax in axes:
            if stage["from_step"] > 1:
                ax.axvline(stage["from_step"], color="0.4", linestyle="--", linewidth=0.8)
        axes[0].annotate(
            f" stage {i}: {what}",
            (stage["from_step"], 0.98),
            xycoords=("data", "axes fraction"),
            fontsize="x-small",
            va="top",
        )


def plot_doremi(root: Path, out: str | Path | None = None) -> Path:
    """A ``mixflow doremi`` folder: the reference's validation losses, the proxy's weights α over its
    updates with the averaged ᾱ the target trains on, and the target's validation losses."""
    pipeline = json.loads((root / "doremi_pipeline.json").read_text(encoding="utf-8"))
    names, dirs = pipeline["domain_names"], {k: Path(v) for k, v in pipeline["output_dirs"].items()}
    proxy = list(read_jsonl(find_weights_log(dirs["proxy"])))
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 9))
    for ax, step in ((axes[0], "reference"), (axes[2], "target")):
        # periodic validation losses where the run evaluated during training, else its training losses;
        # the final validation loss of each domain as a cross at the last step
        val = _history_series(dirs[step], "eval_", "_loss")
        series, label = (val, "validation loss") if val else (_history_series(dirs[step], "mix/loss/"), "training loss")
        final = pipeline["metrics"][step].get("val_loss", {})
        last = pipeline["metrics"][step].get("steps")
        for i, name in enumerate(names):
            color = None
            if name in series:
                xs, ys = zip(*series[name])
                (line,) = ax.plot(xs, ys, label=name, **_style(i))
                color = line.get_color()
            if name in final and last is not None:
                ax.plot([last], [final[name]], "x", ms=8, color=color, label=None if color else name)
        ax.set_ylabel(label + " (×: final validation)", fontsize="small")
        ax.set_title(f"{step} ({dirs[step].name})", fontsize="small")
    target = pipeline["target_weights"]
    for i, name in enumerate(names):
        (line,) = axes[1].plot(
            [r["step"] for r in proxy],
            [r["domain_weights"][i] for r in proxy],
            label=f"{name} (ᾱ {target[i]:.3g})",
            **_style(i),
        )
        axes[1].axhline(target[i], color=line.get_color(), linewidth=0.8, alpha=0.6)
    axes[1].set_ylim(*weight_range(proxy))
    axes[1].set_ylabel("proxy weights α")
    axes[1].set_title(
        f"proxy: α over its updates; thin lines: the {pipeline['output_weights']} weights the target trains on",
        fontsize="small",
    )
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    out_path = Path(out) if out is not None else root / "doremi_pipeline.png"
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
