"""The arena's training runs: one process per run, one torch thread each, as many at once as asked.

A run is a :class:`RunSpec` (a ``mixflow train`` config, or a DoReMi pipeline config); the worker
trains it exactly as the command line does, then scores the final model on the *test* documents,
which no algorithm ever sees, and on the validation documents a swarm chooses on (FGLS, ERMA and
DoReMi read the rows that ``val_size`` holds out of the training files, not these). It returns plain JSON-able numbers, so a run's result can be cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mixflow.errors import MixflowError
from mixflow.utils.allocator import keep_freed_memory
from mixflow.utils.jsonlog import write_json_atomic

#: The method name of a swarm member: scored on the validation documents only.
SWARM = "swarm"


@dataclass(frozen=True)
class RunSpec:
    """One training run of the arena."""

    method: str
    seed: int
    config: dict[str, Any]
    """A ``mixflow train`` config (``kind="train"``) or a ``mixflow doremi`` one (``kind="doremi"``)."""
    test_dir: str
    """A dataset directory with the test split of every domain (``dataset_info.json``)."""
    val_dir: str
    """The same with the validation documents (what a swarm chooses on)."""
    domains: tuple[str, ...]
    clean: tuple[str, ...]
    """The domains whose mean test loss is the target."""
    kind: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)
    """What the caller wants back untouched (a swarm member's mixture)."""
    data_digest: str = ""
    """A hash of the train and test files: a run's saved result is reused only for the same data."""

    def digest(self) -> str:
        """What identifies the run: its config, its data and what it is scored on."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()

    @property
    def result_path(self) -> Path:
        """Where the finished run's result is kept (beside its output folder)."""
        return Path(str(self.config["output_dir"]) + ".result.json")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system says, else all): the
    arena runs that many at once by default, one torch thread each, so every core is used."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every system reports an affinity
        return max(1, os.cpu_count() or 1)


def accelerators() -> int:
    """The CUDA devices this process sees (0 without any): the arena then runs one run on each."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_bf16() -> bool:
    """Whether this process's CUDA devices compute in bfloat16 (Ampere and later)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _start_worker(devices: Any) -> None:
    """Worker initializer: keep freed memory in the process (a step's buffers are not faulted in
    again every step: :mod:`mixflow.utils.allocator`) and, with a device queue, take one device
    index off it and see only that device."""
    keep_freed_memory()
    if devices is None:
        return
    index = devices.get()
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)


def worker_pool(jobs: int, devices: int = 0) -> ProcessPoolExecutor:
    """The arena's workers: ``jobs`` spawned processes on the CPU, or with ``devices`` > 0 one per
    device, each seeing only its own (``CUDA_VISIBLE_DEVICES``), so runs never share a device."""
    context = get_context("spawn")
    if devices <= 0:
        return ProcessPoolExecutor(
            max_workers=max(1, jobs), mp_context=context, initializer=_start_worker, initargs=(None,)
        )
    queue = context.Queue()
    for index in range(devices):
        queue.put(index)
    return ProcessPoolExecutor(max_workers=devices, mp_context=context, initializer=_start_worker, initargs=(queue,))


def reused(specs: Sequence[RunSpec]) -> int:
    """How many of ``specs`` have a saved result of the same spec and data (run before, not again)."""
    return sum(_saved(spec) is not None for spec in specs)


def _saved(spec: RunSpec) -> dict[str, Any] | None:
    try:
        saved = json.loads(spec.result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved["result"] if isinstance(saved, dict) and saved.get("digest") == spec.digest() else None


def run_specs(specs: Sequence[RunSpec], jobs: int, log: Callable[..., None], devices: int = 0) -> list[dict[str, Any]]:
    """Results of every spec, in order; ``jobs`` worker processes at once (spawned, one torch thread
    each; a worker imports torch once and trains one run after another, each seeded by its own
    config, so no run depends on which worker or which run before it), or one per device when
    ``devices`` > 0 (:func:`worker_pool`). A finished run's result is saved beside its output
    folder and reused by a later call with the same spec and data, so an interrupted arena resumes;
    the first failure cancels the runs not started yet and names the run."""
    results: list[dict[str, Any] | None] = [_saved(spec) for spec in specs]
    # the longest runs first (a DoReMi pipeline trains three models), so no core idles at the end
    # while one long run finishes
    todo = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -_planned_steps(specs[i]))
    if len(todo) < len(specs):
        log("arena: %d of %d runs reused from their saved results", len(specs) - len(todo), len(specs))
    with worker_pool(jobs, devices) as pool:
        futures = {pool.submit(run_one, asdict(specs[i])): i for i in todo}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                i, spec = futures[future], specs[futures[future]]
                try:
                    finished = future.result()
                except Exception as err:
                    raise MixflowError(
                        f"arena: the {spec.method} run (seed {spec.seed}) failed: "
                        f"{str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__} "
                        f"(its log: {spec.config['output_dir']}.log; finished runs are kept and reused)"
                    ) from err
                results[i] = finished
                write_json_atomic(spec.result_path, {"digest": spec.digest(), "result": finished})
                scored = "validation target loss" if spec.method == SWARM else "target loss"
                log(
                    "arena: %d/%d runs done (%s, seed %d: %s %.4f)",
                    done,
                    len(todo),
                    spec.method,
                    spec.seed,
                    scored,
                    finished[scored],
                )
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [r for r in results if r is not None]


def check_specs(specs: list[RunSpec]) -> None:
    """Every method's config validated as ``mixflow train`` (or ``mixflow doremi``) would, before any
    run starts: all the problems at once, each naming its method (e.g. a batch too small for PiKE)."""
    from mixflow.config.errors import ConfigError

    problems = spec_problems(specs)
    if problems:
        raise ConfigError(
            "\n".join(["arena: these runs cannot start (choose --methods, or change the config):", *problems])
        )


def spec_problems(specs: list[RunSpec]) -> list[str]:
    """What keeps each spec from starting, as ``mixflow train`` (or ``mixflow doremi``) would say it,
    each line naming its method; empty when every one can start."""
    import tempfile

    import yaml

    from mixflow.config.errors import ConfigError, ConfigErrors
    from mixflow.config.load import load_config
    from mixflow.recipes.doremi import STEPS, parse_pipeline, step_config

    problems = []
    for spec in specs:
        try:
            if spec.kind == "doremi":
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "doremi.yaml"
                    path.write_text(yaml.safe_dump(spec.config), encoding="utf-8")
                    pipeline = parse_pipeline(path)
                    for step in STEPS[:2]:
                        step_config(pipeline, step)
            else:
                load_config(raw=spec.config, check_outputs=False)
        except ConfigErrors as err:
            problems += [f"{spec.method}: {m}" for m in err.messages]
        except (ConfigError, ValueError, FileNotFoundError) as err:
            problems.append(f"{spec.method}: {err}")
    return problems


def _planned_steps(spec: RunSpec) -> int:
    """The training steps a run plans (a DoReMi pipeline: its three models'), to start long runs first."""
    steps = int(spec.config.get("max_steps", 0))
    return 3 * steps if spec.kind == "doremi" else steps


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one spec and score it (the worker; module level so it pickles)."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("mixflow").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    start = time.perf_counter()
    log = Path(spec["config"]["output_dir"] + ".log")  # the Trainer's printed logs, kept beside the run
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        out = _doremi(spec) if spec["kind"] == "doremi" else _train(spec["config"])
        out["seconds"] = time.perf_counter() - start
        tokenizer = spec["config"].get("tokenizer") or out["model_dir"]
        model_dir = out.pop("model_dir")
        # a swarm member is read on the validation documents (they choose the best static mixture),
        # every other run on the test documents (they score): scoring a split nobody reads was an
        # eighth of a run's time
        split, key, target = (
            ("val_dir", "validation_loss", "validation target loss")
            if spec["method"] == SWARM
            else ("test_dir", "test_loss", "target loss")
        )
        config = spec["config"]
        [out[key]] = split_losses(
            model_dir,
            tokenizer,
            [spec[split]],
            spec["domains"],
            int(config["cutoff_len"]),
            bf16=bool(config.get("bf16")) and bool(config.get("use_cpu")),
        )
    out[target] = float(np.mean([out[key][d] for d in spec["clean"]]))
    out["method"], out["seed"], out["extra"] = spec["method"], spec["seed"], spec["extra"]
    return out


def _train(config: dict[str, Any]) -> dict[str, Any]:
    from mixflow.config.load import load_config
    from mixflow.recipes.train import run_training

    out = Path(config["output_dir"])
    metrics = run_training(load_config(raw=config), progress=False)
    return {
        "model_dir": str(out),
        "curve": validation_curve(out),
        "weights": logged_weights(out),
        "final_sampling_weights": metrics.get("final_sampling_weights", {}),
        "steps": metrics["steps"],
    }


def _doremi(spec: dict[str, Any]) -> dict[str, Any]:
    import yaml

    from mixflow.recipes.doremi import run_pipeline

    config = spec["config"]
    path = Path(config["output_dir"]).with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_pipeline(path, progress=False)
    dirs = {step: Path(d) for step, d in result["output_dirs"].items()}
    steps = {step: _trained_steps(d) for step, d in dirs.items()}
    return {
        "model_dir": str(dirs["target"]),
        "curve": validation_curve(dirs["target"]),
        "weights": logged_weights(dirs["proxy"]),
        "target_weights": list(result["target_weights"]),
        "final_sampling_weights": dict(zip(spec["domains"], result["target_weights"])),
        "steps": steps["target"],
        # DoReMi's reference and proxy are compute the static baselines never spend
        "extra_steps": steps["reference"] + steps["proxy"],
    }


def _trained_steps(out: Path) -> int:
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state["global_step"])


def validation_curve(out: Path) -> dict[str, Any]:
    """{"steps": [...], "losses": {domain: [...]}} of the Trainer's periodic evaluations (validation
    split), read from ``out/trainer_state.json``; only the steps where every domain was evaluated."""
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    by_step: dict[int, dict[str, float]] = {}
    for entry in state["log_history"]:  # the Trainer logs each evaluated domain as its own key
        for key, value in entry.items():
            if key.startswith("eval_") and key.endswith("_loss") and key != "eval_loss":
                by_step.setdefault(int(entry["step"]), {})[key[len("eval_") : -len("_loss")]] = float(value)
    names = sorted({d for losses in by_step.values() for d in losses})
    steps = sorted(s for s, losses in by_step.items() if len(losses) == len(names))
    return {"steps": steps, "losses": {d: [by_step[s][d] for s in steps] for d in names}}


def logged_weights(out: Path) -> list[dict[str, Any]]:
    """The run's weights log: [{"step", "sampling", "loss"}] (loss weights where the algorithm sets them)."""
    from mixflow.utils.jsonlog import read_jsonl

    logs = sorted(p for p in out.glob("*_weights.jsonl") if not p.name.endswith(".superseded.jsonl"))
    if not logs:
        return []
    records = []
    for r in read_jsonl(logs[0]):
        sampling = r.get("sampling_weights", r.get("domain_weights"))
        records.append({"step": r["step"], "sampling": sampling, "loss": r.get("loss_weights")})
    return records


def split_losses(
    model_dir: str,
    tokenizer_path: str,
    split_dirs: Sequence[str],
    domains: Sequence[str],
    cutoff_len: int,
    batch: int = 32,
    bf16: bool = False,
) -> list[dict[str, float]]:
    """Per split directory (test, validation), the mean next-token loss of the saved model on each
    domain's documents, each ended by EOS, concatenated and cut into rows of ``cutoff_len`` (the last
    row shorter): every token counts. The model and tokenizer load once for all splits. ``bf16``:
    the model's products under bfloat16 autocast, as it trained (the loss in float32; on the arena's
    test documents the domains' losses moved by at most 3e-4 against float32, in half the time)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mixflow.data.sources import iter_documents, sources_from_dataset_info
    from mixflow.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return [
            {
                source.name: _mean_loss(model, tokenizer, iter_documents(source), cutoff_len, batch)
                for source in sources_from_dataset_info(folder, list(domains))
            }
            for folder in split_dirs
        ]


def document_stream(tokenizer: Any, documents: Any) -> np.ndarray:
    """The token ids a run is scored on: every document, each ended by EOS, end to end."""
    from mixflow.data.tokenizer import encode_batch

    return np.concatenate(
        [
            np.append(np.asarray(ids, dtype=np.int64), tokenizer.eos_token_id)
            for ids in encode_batch(tokenizer, list(documents))
        ]
    )


def _mean_loss(model: Any, tokenizer: Any, documents: Any, cutoff_len: int, batch: int) -> float:
    import torch

    stream = document_stream(tokenizer, documents)
    full = len(stream) // cutoff_len * cutoff_len
    pieces = [
        stream[i : min(i + batch * cutoff_len, full)].reshape(-1, cutoff_len)
        for i in range(0, full, batch * cutoff_len)
    ]
    if len(stream) - full > 1:
        pieces.append(stream[full:][None, :])
    total, count = 0.0, 0
    with torch.no_grad():
        for rows in pieces:
            ids = torch.as_tensor(rows)
            logits = model(input_ids=ids).logits[:, :-1].float()
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
                )
            )
            count += ids[:, 1:].numel()
    return total / max(count, 1)
