"""The arena's data: each domain's documents split into train, validation and test files, and the train tokens
per domain (the natural proportions, UniMax's caps)."""

from __future__ import annotations

import filecmp
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from mixflow.errors import DataError


class Split(NamedTuple):
    """The arena's three document splits (dataset directories with ``dataset_info.json``)."""

    train: Path
    """What every method trains on (FGLS, ERMA and DoReMi hold their ``val_size`` rows out of it)."""
    val: Path
    """Documents that choose the best static mixture: never trained on, never scored."""
    test: Path
    """Documents that score every run: never trained on, never used to choose."""


def split_domains(sources: list[Any], out: Path, every: int = 20, max_documents: int | None = None) -> Split:
    """Write every ``every``-th document of each domain to ``out/test``, the one halfway between to
    ``out/val``, and the rest to ``out/train`` (JSON lines, ``dataset_info.json`` in each). The split is
    a fixed function of the documents' order, so every method sees the same one. Documents, not
    packed rows: a row of a trained document says how well the model memorised it, and a mixture
    that repeats a small domain would be chosen for that (measured: a row-level split chose uniform
    sampling, 0.13 nats below temperature sampling, while on the test documents it was 0.09 above)."""
    from mixflow.data.sources import iter_documents

    dirs = {"train": out / "train", "val": out / "val", "test": out / "test"}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for source in sources:
        handles = {k: open(dirs[k] / f".{source.name}.jsonl.tmp", "w", encoding="utf-8") for k in dirs}
        try:
            counts = _split_one(iter_documents(source, limit=max_documents), handles, every)
        finally:
            for handle in handles.values():
                handle.close()
        if min(counts.values()) == 0:
            problems.append(
                f"domain {source.name!r}: {sum(counts.values())} document(s); the arena splits documents "
                "into train, validation and test, so it needs at least 3"
            )
        for folder in dirs.values():
            _keep_or_replace(folder / f".{source.name}.jsonl.tmp", folder / f"{source.name}.jsonl")
    if problems:
        raise DataError("\n".join(problems))
    for folder in dirs.values():
        info = {src.name: {"file_name": f"{src.name}.jsonl", "columns": {"prompt": "text"}} for src in sources}
        (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Split(dirs["train"], dirs["val"], dirs["test"])


def _keep_or_replace(new: Path, path: Path) -> None:
    """Move ``new`` onto ``path`` unless ``path`` already holds the same bytes: an unchanged file keeps
    its modification time, so the token cache keyed on it is read again, not rebuilt (every benchmark
    on the corpus splits it again)."""
    if path.is_file() and filecmp.cmp(new, path, shallow=False):
        new.unlink()
    else:
        new.replace(path)


def _split_one(documents: Iterable[str], handles: dict[str, Any], every: int) -> dict[str, int]:
    counts = dict.fromkeys(handles, 0)
    # the last two train documents are written two behind: a domain too small for a test (or a
    # validation) document by position gives them its last ones
    held: list[str] = []
    for i, text in enumerate(documents):
        part = "test" if i % every == every - 1 else "val" if i % every == every // 2 - 1 else "train"
        if part == "train":
            held.append(text)
            if len(held) <= 2:
                continue
            text = held.pop(0)
        handles[part].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        counts[part] += 1
    for part in ("test", "val"):
        if counts[part] == 0 and held:
            handles[part].write(json.dumps({"text": held.pop()}, ensure_ascii=False) + "\n")
            counts[part] += 1
    for text in held:
        handles["train"].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        counts["train"] += 1
    return counts


def train_tokens(arena_base: dict[str, Any], train_dir: Path, domains: list[str]) -> dict[str, int]:
    """Tokens per domain in the train files (through the tokenization cache the runs then reuse)."""
    from mixflow.config.load import load_config
    from mixflow.recipes.build import cache_domains

    raw = {
        **arena_base,
        "dataset": ",".join(domains),
        "dataset_dir": str(train_dir),
        "train_type": "static",
        "output_dir": str(train_dir.parent / "tokens-probe"),
    }
    entries = cache_domains(load_config(raw=raw, check_outputs=False), progress=False)
    return {e.meta["key"]["domain"]: int(e.meta["num_tokens"]) for e in entries}
