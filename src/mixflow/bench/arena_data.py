"""The arena's data: each domain's documents split into train and test files, and the train tokens
per domain (the natural proportions, UniMax's caps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def split_domains(sources: list[Any], out: Path, test_every: int = 20, max_documents: int | None = None
                  ) -> tuple[Path, Path]:
    """Write every ``test_every``-th document of each domain to ``out/test`` and the rest to
    ``out/train`` (JSON lines, ``dataset_info.json`` in each); (train dir, test dir). The split is a
    fixed function of the documents' order, so every method sees the same one."""
    from mixflow.data.sources import iter_documents

    dirs = {"train": out / "train", "test": out / "test"}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        handles = {k: open(dirs[k] / f".{source.name}.jsonl.tmp", "w", encoding="utf-8") for k in dirs}
        try:
            held, tested = None, 0  # the last train document, written one behind: a domain too small for
            for i, text in enumerate(iter_documents(source, limit=max_documents)):  # one test document gives it its last
                if i % test_every == test_every - 1:
                    handles["test"].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    tested += 1
                    continue
                if held is not None:
                    handles["train"].write(json.dumps({"text": held}, ensure_ascii=False) + "\n")
                held = text
            if held is not None:
                handles["test" if tested == 0 else "train"].write(json.dumps({"text": held}, ensure_ascii=False) + "\n")
        finally:
            for handle in handles.values():
                handle.close()
        for folder in dirs.values():
            (folder / f".{source.name}.jsonl.tmp").replace(folder / f"{source.name}.jsonl")
    for folder in dirs.values():
        info = {src.name: {"file_name": f"{src.name}.jsonl", "columns": {"prompt": "text"}} for src in sources}
        (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return dirs["train"], dirs["test"]


def train_tokens(arena_base: dict[str, Any], train_dir: Path, domains: list[str]) -> dict[str, int]:
    """Tokens per domain in the train files (through the tokenization cache the runs then reuse)."""
    from mixflow.config.load import load_config
    from mixflow.recipes.build import tokenize_domains

    raw = {**arena_base, "dataset": ",".join(domains), "dataset_dir": str(train_dir), "train_type": "static",
           "output_dir": str(train_dir.parent / "tokens-probe")}
    entries = tokenize_domains(load_config(raw=raw, check_outputs=False), progress=False)
    return {e.meta["key"]["domain"]: int(e.meta["num_tokens"]) for e in entries}
