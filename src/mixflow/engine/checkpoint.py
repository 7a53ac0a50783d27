"""The engine's checkpoint file and what a resume does to the weights log."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixflow.errors import ResumeError
from mixflow.utils.jsonlog import append_jsonl, read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

#: The engine's state inside a checkpoint directory.
STATE_FILE = "mixflow_state.json"
#: Version of the state layout (:meth:`StepEngine.state_dict`).
STATE_VERSION = 1


def write_state(checkpoint_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``<checkpoint_dir>/mixflow_state.json``."""
    path = Path(checkpoint_dir) / STATE_FILE
    write_json_atomic(path, state)
    return path


def read_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The engine state saved in ``checkpoint_dir``; an error naming the directory when it has none."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"resume_from_checkpoint: {checkpoint_dir} has no {STATE_FILE} (not a mixflow checkpoint)"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_compatible(state: Mapping[str, Any], domain_names: list[str], algorithm_name: str) -> None:
    """Raise one line when a saved engine state cannot be restored into this run."""
    if state.get("version") != STATE_VERSION:
        raise ResumeError(
            f"mixflow state: version {state.get('version')!r} is not supported (expected {STATE_VERSION})"
        )
    for key, mine in (("domain_names", domain_names), ("algorithm_name", algorithm_name)):
        if state[key] != mine:
            raise ResumeError(f"mixflow state: {key} is {state[key]!r} in the checkpoint but {mine!r} in this run")


def supersede_log_lines(path: Path, step: int) -> int:
    """Move log lines of updates after ``step`` (a run resumed from an earlier checkpoint will write
    them again) to ``<name>.superseded.jsonl``; nothing is deleted. Returns how many moved."""
    if not path.is_file():
        return 0
    records = list(read_jsonl(path))
    later = [r for r in records if r.get("step", 0) > step]
    if not later:
        return 0
    for record in later:
        append_jsonl(path.with_suffix(".superseded.jsonl"), record)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.unlink(missing_ok=True)
    for record in records:
        if record.get("step", 0) <= step:
            append_jsonl(tmp, record)
    tmp.touch()
    tmp.replace(path)
    logger.warning(
        "%s: moved %d line(s) after step %d to %s", path, len(later), step, path.with_suffix(".superseded.jsonl")
    )
    return len(later)
