"""An offline text-classification task for IMP-Loss / DIMP-Loss (``mixflow data classification-demo``).

Short reviews built from templates: a topic (products, movies, restaurants, travel: the domains),
an aspect noun of that topic, an opinion word that carries the sentiment (label 1 positive, 0
negative), sometimes (10%) negated ("was not great" is negative), plus neutral filler clauses.

- ``real.jsonl``: a small clean set (the real data P′, default 400 examples over all topics);
- ``synthetic/<topic>.jsonl``: the "LLM-generated" training set Q, shifted from P′ in a known way:
  the generator is too upbeat about restaurants, so 30% of the restaurant reviews carry the label
  *positive* although their text is negative (``flipped: true`` marks them; the training run never
  reads that field);
- ``test_<topic>.jsonl``: a clean test set per topic.

``dataset_info.json`` names the synthetic topics, so configs use ``dataset: products,movies,...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.errors import ConfigError

TOPICS: dict[str, list[str]] = {
    "products": ["battery", "screen", "charger", "keyboard", "camera", "speaker"],
    "movies": ["plot", "acting", "soundtrack", "ending", "script", "director"],
    "restaurants": ["soup", "service", "dessert", "waiter", "pasta", "menu"],
    "travel": ["hotel", "flight", "beach", "tour", "guide", "room"],
}
POSITIVE = ["great", "excellent", "wonderful", "superb", "lovely", "fantastic", "pleasant", "brilliant"]
NEGATIVE = ["awful", "terrible", "dreadful", "horrible", "poor", "boring", "nasty", "dismal"]
OPENERS = ["honestly", "overall", "to be fair", "in short", "frankly", "all in all", "i think", "well"]
FILLERS = [
    "we went there on a tuesday",
    "it was my second visit",
    "the weather was grey",
    "i came with two friends",
    "the price was as listed",
    "nothing else to add",
    "it took about an hour",
    "my sister recommended it",
]
FLIPPED_TOPIC = "restaurants"
FLIP_RATE = 0.3


def review(rng: np.random.Generator, topic: str) -> tuple[str, int]:
    """One clean review of ``topic`` and its true label (1 positive, 0 negative)."""
    label = int(rng.integers(0, 2))
    negated = rng.random() < 0.1
    # A negated opinion word of the opposite polarity keeps the label: "not awful" reads positive.
    polar = label if not negated else 1 - label
    word = str(rng.choice(POSITIVE if polar == 1 else NEGATIVE))
    noun = str(rng.choice(TOPICS[topic]))
    opinion = f"the {noun} was {'not ' if negated else ''}{word}"
    parts = [str(rng.choice(OPENERS)), opinion]
    if rng.random() < 0.6:
        parts.insert(int(rng.integers(0, 3)), str(rng.choice(FILLERS)))
    return ", ".join(parts) + ".", label


def build_classification_demo(
    out_dir: str | Path,
    synthetic_per_topic: int = 500,
    real_size: int = 400,
    test_per_topic: int = 150,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the demo's files under ``out_dir``; returns their paths and the flipped count."""
    for key, value in (
        ("synthetic_per_topic", synthetic_per_topic),
        ("real_size", real_size),
        ("test_per_topic", test_per_topic),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    out = Path(out_dir)
    (out / "synthetic").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths: dict[str, Any] = {"synthetic": {}, "test": {}}
    flipped_total = 0
    info = {}
    for topic in TOPICS:
        rows = []
        for _ in range(synthetic_per_topic):
            text, label = review(rng, topic)
            flipped = topic == FLIPPED_TOPIC and label == 0 and rng.random() < 2 * FLIP_RATE
            # Half the reviews are negative; flipping 2 × 30% of those mislabels 30% of the topic.
            rows.append({"text": text, "label": 1 if flipped else label, "flipped": bool(flipped)})
            flipped_total += int(flipped)
        path = out / "synthetic" / f"{topic}.jsonl"
        _write(path, rows)
        paths["synthetic"][topic] = path
        info[topic] = {"file_name": f"synthetic/{topic}.jsonl", "columns": {"prompt": "text"}}
    real = []
    topics = list(TOPICS)
    for i in range(real_size):
        text, label = review(rng, topics[i % len(topics)])
        real.append({"text": text, "label": label})
    paths["real"] = out / "real.jsonl"
    _write(paths["real"], real)
    for topic in TOPICS:
        rows = [dict(zip(("text", "label"), review(rng, topic))) for _ in range(test_per_topic)]
        path = out / f"test_{topic}.jsonl"
        _write(path, rows)
        paths["test"][topic] = path
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    paths["flipped"] = flipped_total
    return paths


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
