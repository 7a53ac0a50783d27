"""The arena's figures: the target loss over steps per method (mean ± sd over seeds), and each
method's logged weights with sampling and loss weights on their own axes, never clipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_plot(path: Path, runs: dict[str, list[dict[str, Any]]], clean: list[str]) -> Path | None:
    """Mean clean validation loss over steps, one line per method with a ±1 sd band over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    drawn = 0
    for method, results in runs.items():
        curves = [r["curve"] for r in results if r["curve"]["steps"]]
        if not curves or any(c["steps"] != curves[0]["steps"] for c in curves):
            continue
        values = np.array(
            [[np.mean([c["losses"][d][i] for d in clean]) for i in range(len(c["steps"]))] for c in curves]
        )
        mean, sd = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
        style = "--" if method in ("uniform", "natural", "temperature", "unimax", "best static") else "-"
        (line,) = ax.plot(curves[0]["steps"], mean, style, label=method, linewidth=1.4)
        ax.fill_between(curves[0]["steps"], mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("mean clean validation loss (± sd over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def weights_plot(path: Path, runs: dict[str, list[dict[str, Any]]], domains: list[str]) -> Path | None:
    """Seed 0's logged weights per method that changes them: sampling weights on the left axis, loss
    weights (where the method sets any other than 1) on the right, each scaled to its own range."""
    shown = {m: r[0]["weights"] for m, r in runs.items() if r and len(r[0]["weights"]) > 1}
    if not shown:
        return None
    plt = _pyplot()
    cols = 3
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.2 * rows), squeeze=False)
    for ax, (method, records) in zip(axes.flat, shown.items()):
        steps = [r["step"] for r in records]
        for d, domain in enumerate(domains):
            ax.plot(steps, [r["sampling"][d] for r in records], label=domain, linewidth=1.2)
        ax.set_title(method, fontsize="small")
        ax.set_ylabel("sampling p", fontsize="x-small")
        ax.grid(True, alpha=0.3)
        loss = [r["loss"] for r in records if r.get("loss") is not None]
        if loss and not np.allclose(loss, 1.0):
            twin = ax.twinx()
            for d in range(len(domains)):
                twin.plot(steps[-len(loss) :], [w[d] for w in loss], ":", linewidth=1.0)
            twin.set_ylabel("loss weight w (dotted)", fontsize="x-small")
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="xx-small", ncol=2)
    fig.supxlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
