"""What the arena concludes for a user: the mixture to train on, and the method if one beats it, as
keys ready for ``mixflow train`` — exactly the keys the method was measured with (its update steps,
its sampling rule, its default starting weights), so the claim and the config are one thing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from mixflow.bench.stats import Comparison, interval_text
from mixflow.config.mixture_keys import static_mixture_keys


def recommend(
    domains: Sequence[str], best_mixture: Sequence[float], comparisons: Iterable[Comparison], methods: Iterable[str]
) -> dict[str, Any]:
    """The best static mixture, unless one of ``methods`` (not a baseline) lowers the target loss below
    it with its whole 95% interval; then that method. One sentence says why."""
    mixture = {d: round(float(w), 4) for d, w in zip(domains, best_mixture)}
    candidates = set(methods)
    against_best = [c for c in comparisons if c.baseline == "best static" and c.method in candidates]
    winners = [c for c in against_best if c.verdict == "better"]
    if winners:
        top = min(winners, key=lambda c: c.interval[0])
        why = (
            f"{top.method} lowers the target loss below the best static mixture by {-top.interval[0]:.4f} "
            f"(95% interval {interval_text(top)}) over {len(top.values)} seeds"
        )
        return {"mixture": mixture, "method": top.method, "why": why}
    near = [c.method for c in against_best if c.verdict == "no different"]
    why = (
        "no method beats the best static mixture with its whole 95% interval"
        + (f" ({', '.join(near)} no different)" if near else "")
        + "; train on it"
    )
    return {"mixture": mixture, "method": "static", "why": why}


def recommendation_yaml(domains: Sequence[str], rec: Mapping[str, Any], method_keys: Mapping[str, Any]) -> str:
    """``rec`` as config keys: the static mixture, or the method's keys as the arena trained it (DoReMi:
    a ``mixflow doremi`` pipeline). Add them to your config (model, data, optimiser)."""
    header = [f"# mixflow arena: {rec['why']}"]
    if rec["method"] == "static":
        keys: dict[str, Any] = static_mixture_keys(dict(zip(domains, rec["mixture"].values())))
    elif rec["method"] == "doremi":
        header.append(
            "# DoReMi's three steps as the arena ran them: mixflow doremi THIS_FILE (with your model and data keys)"
        )
        keys = {"dataset": ",".join(domains), **method_keys}
    else:
        keys = {"dataset": ",".join(domains), "train_type": "dynamic_mix", **method_keys}
    return "\n".join(header) + "\n" + yaml.safe_dump(keys, sort_keys=False)
