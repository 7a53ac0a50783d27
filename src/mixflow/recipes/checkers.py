"""Quality and diversity checkers for IMP-Loss / DIMP-Loss (Kuo et al. 2025; ``mixflow checkers``).

``mixflow checkers CONFIG.yaml`` takes a classification config whose training domains are the
synthetic set Q and whose ``real_data`` is the small real set P′, and

1. trains the **diversity checker** Q̂ on the synthetic training rows and the **quality checker** P̂′
   on the real set: each is an ordinary ``mixflow train`` run of the config's model and training
   arguments (plain cross-entropy, static mixture), saved under ``<output_dir>/diversity`` and
   ``<output_dir>/quality``;
2. computes, for every training row j (in ``sample_ids`` order), P̂′(y_j|x_j) and Q̂(y_j|x_j) and
   writes them to ``<output_dir>/imp_cache.npz``, the file the ``imp`` and ``dimp`` weighters read
   (``weights_cache``).

Nothing is redone needlessly, and nothing stale is reused: a checker is retrained only when what
it is trained from changed (its data files' contents, model, training arguments), and the cache
records a fingerprint of the training data (file contents, fields, split) and of both checkers'
weights; when either differs the cache is recomputed, with a message saying why. A training run
with ``imp``/``dimp`` checks the data fingerprint before tokenizing anything, so a cache computed
for other data is an error, never silently misaligned weights.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.config.components import static_component
from mixflow.config.schema import DomainConfig, RunConfig
from mixflow.data.classification import ClassificationCollator, LabelVocabulary, read_labelled
from mixflow.data.sources import DomainSource
from mixflow.errors import ConfigError
from mixflow.recipes.classification import prepare_classification_data
from mixflow.recipes.inputs import as_path_list, domain_sources, source_name
from mixflow.recipes.train import run_training
from mixflow.recipes.weights_cache import (
    CACHE_FILE,
    WeightsCache,
    content_digest,
    data_fingerprint,
    hash_json,
    read_weights_cache,
    weights_digest,
    write_weights_cache,
)
from mixflow.utils.jsonlog import write_json_atomic

logger = logging.getLogger(__name__)

MARKER_FILE = "mixflow_checker.json"


# ---- `mixflow checkers` ----------------------------------------------------------------------
@dataclass
class CheckersResult:
    """What ``mixflow checkers`` did."""

    cache_path: Path
    quality_dir: Path
    diversity_dir: Path
    trained: list[str]
    """Checkers (``quality``, ``diversity``) trained by this call; the others were up to date."""
    cache_status: str
    """``up to date``, or why the cache was (re)computed."""
    metrics: dict[str, dict[str, Any]]
    """Each checker's final metrics (loss and accuracy per evaluated set), when it was trained now."""
    summary: dict[str, float]
    """Mean weights of the cache: IMP's P̂′/Q̂ and the checkers' mean probabilities."""


def _checker_run(run: RunConfig, kind: str, out_dir: Path, vocabulary: Any) -> RunConfig:
    """The config of one checker's training run: plain cross-entropy on a static mixture."""
    sub = copy.deepcopy(run)
    sub.algorithm, sub.weighter = static_component(), None
    sub.safety.overwrite_output_dir = True  # retraining a stale checker replaces it (the old one is moved aside)
    m = sub.mixing
    m.train_type, m.component, m.components_cfg_file, m.component_name = "static", None, None, "static"
    m.static_mix = False
    training = {k: v for k, v in sub.training.items() if k != "resume_from_checkpoint"}
    training.update(output_dir=str(out_dir), save_strategy="no")
    sub.training = training
    sub.model.num_labels = vocabulary.num_labels
    if kind == "quality":
        text_field = domain_sources(run)[0].text_field
        sub.data.domains = [
            DomainConfig(name=source_name(p), path=p, text_field=text_field) for p in as_path_list(run.data.real_data)
        ]
        sub.data.dataset = None
        sub.data.val_size = 0.0  # the real set is small: every example trains the checker
        m.init_mixture_proportions, m.domain_prior = None, None
        m.mixture_sample_rule = "stratified"
    return sub


#: TrainingArguments that cannot change a checker's weights (where outputs go, logs, progress bars).
_COSMETIC_TRAINING_KEYS = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "disable_tqdm",
        "report_to",
        "run_name",
        "logging_dir",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "eval_strategy",
        "eval_steps",
        "per_device_eval_batch_size",
    }
)


def _training_fingerprint(sub: RunConfig) -> str:
    training = {k: v for k, v in sub.training.items() if k not in _COSMETIC_TRAINING_KEYS}
    return hash_json(
        {
            "data": data_fingerprint(sub),
            "model": [sub.model.model_name_or_path, sub.model.model_config, sub.model.num_labels],
            "tokenizer": sub.data.tokenizer,
            "cutoff_len": sub.data.cutoff_len,
            "eval_data": [content_digest(p) for p in as_path_list(sub.data.eval_data)],
            "mixing": [sub.mixing.mixture_sample_rule, sub.mixing.init_mixture_proportions],
            "training": training,
        }
    )


def _up_to_date(out_dir: Path, fingerprint: str) -> bool:
    marker = out_dir / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        return recorded.get("training_fingerprint") == fingerprint and recorded.get("weights") == weights_digest(
            out_dir
        )
    except (ValueError, FileNotFoundError, OSError):
        return False


def _train_checker(sub: RunConfig, out_dir: Path, fingerprint: str, progress: bool) -> dict[str, Any]:
    metrics = run_training(sub, progress=progress)
    write_json_atomic(out_dir / MARKER_FILE, {"training_fingerprint": fingerprint, "weights": weights_digest(out_dir)})
    return metrics


def label_probabilities(model_dir: str | Path, dataset: Any, collator: Any, batch_size: int = 64) -> np.ndarray:
    """P(y_j|x_j) of a saved classifier for every row j of ``dataset``, in row order."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            probs = torch.softmax(logits.double(), dim=-1)
            out.append(probs.gather(1, batch["labels"][:, None]).squeeze(1).numpy())
    return np.concatenate(out) if out else np.empty(0)


def run_checkers(run: RunConfig, progress: bool = True, force: bool = False) -> CheckersResult:
    """Train (or reuse) both checkers and (re)compute the per-example cache; see the module docstring."""
    if run.data.task != "classification":
        raise ConfigError("task: `mixflow checkers` needs task: classification")
    if not as_path_list(run.data.real_data):
        raise ConfigError(
            "real_data: required by `mixflow checkers` (the small real set the quality checker trains on)"
        )
    out = Path(run.training["output_dir"])
    dirs = {"quality": out / "quality", "diversity": out / "diversity"}
    cache_path = out / CACHE_FILE
    vocabulary = _shared_vocabulary(run)
    trained, metrics = [], {}
    for kind in ("diversity", "quality"):
        sub = _checker_run(run, kind, dirs[kind], vocabulary)
        fingerprint = _training_fingerprint(sub)
        if not force and _up_to_date(dirs[kind], fingerprint):
            logger.info("checkers: the %s checker in %s is up to date", kind, dirs[kind])
            continue
        logger.info("checkers: training the %s checker into %s", kind, dirs[kind])
        metrics[kind] = _train_checker(sub, dirs[kind], fingerprint, progress)
        trained.append(kind)
    data_fp = data_fingerprint(run)
    checker_fp = hash_json([weights_digest(dirs["quality"]), weights_digest(dirs["diversity"])])
    status = _cache_status(cache_path, data_fp, checker_fp, force)
    if status == "up to date":
        cache = read_weights_cache(cache_path)
        logger.info("checkers: %s is up to date", cache_path)
    else:
        if cache_path.is_file():
            logger.warning("checkers: %s is stale; %s", cache_path, status)
        cache = _compute_cache(run, dirs, data_fp, checker_fp, progress)
        write_weights_cache(cache_path, cache)
        logger.info("checkers: wrote %s (%d rows)", cache_path, len(cache.quality))
    return CheckersResult(cache_path, dirs["quality"], dirs["diversity"], trained, status, metrics, _summary(cache))


def _shared_vocabulary(run: RunConfig) -> LabelVocabulary:
    """The label numbering of the training run, checked against the real set (the checkers must
    number the classes like the training run does, and see every class)."""
    sources = domain_sources(run)
    train_labels = [
        y
        for s in sources
        for y in read_labelled(DomainSource(s.name, s.path, s.text_field, run.data.label_field), run.data.max_samples)[
            1
        ]
    ]
    vocabulary = LabelVocabulary.infer(train_labels, run.model.num_labels)
    real: list[Any] = []
    for path in as_path_list(run.data.real_data):
        labels = read_labelled(DomainSource("real", path, sources[0].text_field, run.data.label_field))[1]
        vocabulary.encode(labels, f"real_data: {path}")
        real.extend(labels)
    if vocabulary.names is not None and sorted(set(real)) != vocabulary.names:
        raise ConfigError(
            f"real_data: has the labels {sorted(set(real))} but the training data {vocabulary.names}; "
            "the quality checker must see every class"
        )
    return vocabulary


def _cache_status(cache_path: Path, data_fp: str, checker_fp: str, force: bool) -> str:
    """``up to date``, or why the cache must be (re)computed."""
    if force:
        return "recomputed (forced)"
    if not cache_path.is_file():
        return "computed: no cache yet"
    try:
        old = read_weights_cache(cache_path)
    except ValueError:
        return "recomputed: the old file was unreadable"
    if old.data_fingerprint != data_fp:
        return "recomputed: the training data changed since it was computed"
    if old.checker_fingerprint != checker_fp:
        return "recomputed: the checkers changed since it was computed"
    return "up to date"


def _compute_cache(
    run: RunConfig, dirs: dict[str, Path], data_fp: str, checker_fp: str, progress: bool
) -> WeightsCache:
    """Both checkers' probability of every training row's label, in ``sample_ids`` order."""
    data = prepare_classification_data(run, progress=progress)
    pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
    collator = ClassificationCollator(int(pad))
    batch = int(run.training.get("per_device_eval_batch_size", 64))
    return WeightsCache(
        quality=label_probabilities(dirs["quality"], data.train, collator, batch),
        diversity=label_probabilities(dirs["diversity"], data.train, collator, batch),
        labels=data.train.labels,
        domain_names=list(data.train.domain_names),
        domain_sizes=list(data.train.domain_sizes),
        data_fingerprint=data_fp,
        checker_fingerprint=checker_fp,
    )


def _summary(cache: WeightsCache, floor: float = 1e-3) -> dict[str, float]:
    """Mean probabilities and mean IMP weight of the cache (the weighter's default floor)."""
    ratio = np.maximum(cache.quality, floor) / np.maximum(cache.diversity, floor)
    nan = float("nan")
    return {
        "rows": float(len(ratio)),
        "mean_quality": float(cache.quality.mean()) if len(ratio) else nan,
        "mean_diversity": float(cache.diversity.mean()) if len(ratio) else nan,
        "mean_imp_weight": float(ratio.mean()) if len(ratio) else nan,
    }


def format_checkers_report(result: CheckersResult) -> str:
    """What `mixflow checkers` prints: where things are, what was redone, the checkers' accuracy."""
    lines = [
        f"quality checker P'(y|x):  {result.quality_dir}",
        f"diversity checker Q(y|x): {result.diversity_dir}",
        f"trained now: {', '.join(result.trained) or 'none (both up to date)'}",
        f"weights_cache: {result.cache_path} ({result.cache_status})",
        "cache: " + ", ".join(f"{k} {v:.4g}" for k, v in result.summary.items()),
    ]
    for kind, metrics in result.metrics.items():
        acc = metrics.get("val_accuracy", {})
        if acc:
            lines.append(f"{kind} checker accuracy: " + ", ".join(f"{n} {a:.4f}" for n, a in acc.items()))
    return "\n".join(lines)
