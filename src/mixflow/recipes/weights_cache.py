"""The IMP/DIMP checker cache: per-training-row P̂′(y|x) and Q̂(y|x), and the fingerprints that keep
it from being used with other data (written by ``mixflow checkers``, read by the run builder)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.algorithms.imp import ImpParams
from mixflow.config.schema import RunConfig
from mixflow.data.sources import DomainSource, resolve_files
from mixflow.errors import DataError
from mixflow.recipes.inputs import domain_sources, split_seed

CACHE_FILE = "imp_cache.npz"
CACHE_VERSION = 1
WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


# ---- the cache file ------------------------------------------------------------------------
@dataclass
class WeightsCache:
    """Per-training-row checker probabilities, indexed by global row (``sample_ids``)."""

    quality: np.ndarray
    """P̂′(y_j|x_j): the quality checker's probability of each row's label."""
    diversity: np.ndarray
    """Q̂(y_j|x_j): the diversity checker's probability of each row's label."""
    labels: np.ndarray
    """Each row's class index (a sanity check for readers)."""
    domain_names: list[str]
    domain_sizes: list[int]
    data_fingerprint: str
    """Fingerprint of the training rows (see :func:`data_fingerprint`)."""
    checker_fingerprint: str
    """Fingerprint of both checkers' weights and configs."""


def write_weights_cache(path: str | Path, cache: WeightsCache) -> Path:
    """Write ``cache`` atomically (a reader never sees a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        version=np.int64(CACHE_VERSION),
        quality=np.asarray(cache.quality, dtype=np.float64),
        diversity=np.asarray(cache.diversity, dtype=np.float64),
        labels=np.asarray(cache.labels, dtype=np.int64),
        domain_names=np.asarray(cache.domain_names, dtype=str),
        domain_sizes=np.asarray(cache.domain_sizes, dtype=np.int64),
        data_fingerprint=np.asarray(cache.data_fingerprint),
        checker_fingerprint=np.asarray(cache.checker_fingerprint),
    )
    os.replace(tmp, path)
    return path


def read_weights_cache(path: str | Path) -> WeightsCache:
    """Read a cache written by :func:`write_weights_cache`; a foreign or old file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights_cache: file not found: {path} (run `mixflow checkers CONFIG` first)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if int(f["version"]) != CACHE_VERSION:
                raise DataError(
                    f"weights_cache: {path} has version {int(f['version'])}, expected {CACHE_VERSION}; rerun `mixflow checkers`"
                )
            return WeightsCache(
                quality=f["quality"].astype(np.float64),
                diversity=f["diversity"].astype(np.float64),
                labels=f["labels"].astype(np.int64),
                domain_names=[str(x) for x in f["domain_names"]],
                domain_sizes=[int(x) for x in f["domain_sizes"]],
                data_fingerprint=str(f["data_fingerprint"]),
                checker_fingerprint=str(f["checker_fingerprint"]),
            )
    except (KeyError, OSError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith("weights_cache:"):
            raise
        raise DataError(
            f"weights_cache: {path} is not a cache written by `mixflow checkers` ({type(err).__name__})"
        ) from None


# ---- fingerprints --------------------------------------------------------------------------
def _digest_files(paths: Iterable[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root) if root else p.name).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def content_digest(path: str | Path) -> str:
    """sha256 of a file's contents, or of every file under a directory (names included)."""
    p = Path(path)
    if p.is_dir():
        return _digest_files(sorted(q for q in p.rglob("*") if q.is_file()), root=p)
    return _digest_files([p])


def _source_digest(source: DomainSource) -> str | list[str]:
    """One file's (or directory's) digest, or the digests of a multi-file domain's files in order."""
    files = resolve_files(source)
    if isinstance(source.path, str) and len(files) == 1 and str(files[0]) == source.path:
        return content_digest(source.path)
    return [content_digest(f) for f in files]


def hash_json(value: Any) -> str:
    """sha256 of a JSON rendering of ``value`` (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(run: RunConfig) -> str:
    """What decides the training rows and their order: each domain's name, file contents and text
    field, the label field, the held-out split (``val_size`` and its seed) and ``max_samples``."""
    d = run.data
    return hash_json(
        {
            "domains": [(s.name, _source_digest(s), s.text_field) for s in domain_sources(run)],
            "label_field": d.label_field,
            "val_size": d.val_size,
            "split_seed": split_seed(run),
            "max_samples": d.max_samples,
        }
    )


def weights_digest(model_dir: str | Path) -> str:
    """Fingerprint of a saved model's config and weights."""
    d = Path(model_dir)
    files = sorted(p for p in d.iterdir() if p.is_file() and (p.name in WEIGHT_FILES or p.name.startswith("model-")))
    if not any(p.name != "config.json" for p in files):
        raise FileNotFoundError(f"checker: no model weights in {d}")
    return _digest_files(files, root=d)


# ---- the training run's check --------------------------------------------------------------
def verify_weights_cache(run: RunConfig) -> None:
    """When the run's weighter reads a checker cache, check the cache was computed for this run's
    training rows. Raises a one-line ValueError naming the key otherwise."""
    weighter = run.weighter
    if weighter is None or not isinstance(weighter.params, ImpParams):
        return
    path = weighter.params.weights_cache
    cache = read_weights_cache(path)
    if cache.data_fingerprint != data_fingerprint(run):
        raise DataError(
            f"{weighter.name}.params.weights_cache: {path} was computed for other training data (files, fields, "
            f"val_size, seed or max_samples differ); rerun `mixflow checkers` with this run's data keys"
        )
