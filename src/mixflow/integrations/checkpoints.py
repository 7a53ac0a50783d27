"""Checkpoints a run can trust: which ``checkpoint-<step>`` folders are complete (every file a resume
needs is there and parses), the newest of them, and rotation that counts complete checkpoints only
and never leaves a half-deleted one behind."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Set as AbstractSet

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mixflow.errors import ResumeError

logger = logging.getLogger(__name__)

#: The files of a complete checkpoint: the engine's state and the Trainer's state, written last.
COMPLETE_MARKERS = ("mixflow_state.json", "trainer_state.json")


#: A checkpoint being deleted is renamed to this prefix first, so a kill mid-deletion never leaves a
#: half-deleted ``checkpoint-*`` that looks like a checkpoint.
DELETING = ".deleting-"


def rotate_complete_checkpoints(
    output_dir: str, limit: int | None, protected: AbstractSet[str] = frozenset()
) -> list[str]:
    """Keep the ``limit`` newest *complete* checkpoints (and ``protected`` ones); incomplete ones (an
    interrupted save or deletion) go first and never count towards the limit. Returns what was removed."""
    if not limit or limit <= 0:
        return []
    for leftover in glob.glob(os.path.join(output_dir, DELETING + "*")):  # deletions a kill interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    found = checkpoints_by_step(output_dir)
    complete = [path for _, path in found if not checkpoint_problems(path)]
    keep = {os.path.normpath(p) for p in protected}
    doomed = [path for _, path in found if path not in complete]
    doomed += [path for path in complete[:-limit] if os.path.normpath(path) not in keep]
    for path in doomed:
        trash = os.path.join(output_dir, DELETING + os.path.basename(path))
        os.replace(path, trash)
        shutil.rmtree(trash)
    if doomed:
        logger.info("save_total_limit %d: removed %s", limit, ", ".join(os.path.basename(p) for p in doomed))
    return doomed


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint was saved at (its ``trainer_state.json``)."""
    path = os.path.join(checkpoint, "trainer_state.json")
    try:
        with open(path, encoding="utf-8") as f:
            return int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResumeError(f"resume_from_checkpoint: {path} is not a readable trainer state ({err})") from None


def _unreadable(path: str) -> str | None:
    """Why a checkpoint's JSON file cannot be trusted (empty or half-written), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"{os.path.basename(path)} does not parse ({err})"
    return None


def checkpoint_problems(path: str) -> list[str]:
    """Why a checkpoint cannot be resumed (an interrupted save, a half-deleted one); empty when complete."""
    missing = [m for m in COMPLETE_MARKERS if not os.path.isfile(os.path.join(path, m))]
    if missing:
        return [f"no {' or '.join(missing)}"]
    # the Trainer writes trainer_state.json in place: a kill inside that write leaves it empty
    return [why for m in COMPLETE_MARKERS if (why := _unreadable(os.path.join(path, m)))]


def checkpoints_by_step(output_dir: str) -> list[tuple[int, str]]:
    """Every ``checkpoint-<step>`` folder of ``output_dir``, oldest first (by step, never by mtime)."""
    found = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        step = name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if (
            name.startswith(PREFIX_CHECKPOINT_DIR + "-")
            and step.isdigit()
            and os.path.isdir(os.path.join(output_dir, name))
        ):
            found.append((int(step), os.path.join(output_dir, name)))
    return sorted(found)


def newest_complete_checkpoint(output_dir: str) -> str:
    """The newest ``checkpoint-<step>`` that holds every file a resume needs; the newer ones it
    skips are named in a warning with what they lack (a save that was interrupted)."""
    for _, path in reversed(checkpoints_by_step(output_dir)):
        problems = checkpoint_problems(path)
        if not problems:
            return path
        logger.warning("resume_from_checkpoint: skipping %s, an interrupted save (%s)", path, "; ".join(problems))
    raise ResumeError(f"resume_from_checkpoint: no complete checkpoint in {output_dir}")
