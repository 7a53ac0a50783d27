"""``lm-arena``: every mixing method against the simple mixtures and the best static one, on real text.

The corpus is ``mixflow data corpus`` (seven domains from text this machine ships, sizes 40× apart,
a 1024-token BPE); a small Llama with an untied head (PiKE and VA measure its gradients); the same
target steps for every method, each trained exactly as ``mixflow train`` trains it with its
documented defaults, several runs at once, one torch thread each (:mod:`mixflow.bench.arena`,
:mod:`mixflow.bench.arena_compare`).
"""

from __future__ import annotations

from typing import Any

from mixflow.bench.arena import BASELINES, METHODS, Arena
from mixflow.bench.arena_compare import run_arena
from mixflow.bench.arena_data import split_domains, train_tokens
from mixflow.bench.arena_plots import curves_plot, weights_plot
from mixflow.bench.arena_runs import accelerators, usable_cores
from mixflow.bench.arena_scores import TARGET
from mixflow.bench.base import BenchContext, BenchResult, register_benchmark
from mixflow.data.corpus import DOMAINS, build_corpus
from mixflow.data.sources import sources_from_dataset_info

#: Tokens per training row (and per scored row). Not 48: a step costs 0.8× as much, but the full
#: arena at 48 lost its calibration (the best static mixture's seed sd 0.051, 0.36 of the natural →
#: best-static gap; natural − uniform 2.8 of it), and a narrower MLP (256) saved nothing measurable.
CUTOFF = 64


def base_config(
    tokenizer: str, steps: int, tokenized: str, val_rows: int = 64, batch: int = 16, use_cpu: bool = True
) -> dict[str, Any]:
    """The shared ``mixflow train`` keys of every arena run on the corpus. ``val_rows`` per domain are
    held out for the periodic evaluations and the methods that read held-out losses (a count, not a
    fraction: 5% of the largest domain was 60% of an evaluation's cost and tells no more).
    ``use_cpu``: False where the runs go one per accelerator."""
    return {
        "tokenizer": tokenizer,
        "tokenized_dir": tokenized,
        "cutoff_len": CUTOFF,
        "val_size": val_rows,
        "model_config": {
            "model_type": "llama",
            "hidden_size": 128,
            "intermediate_size": 344,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": CUTOFF,
            "tie_word_embeddings": False,
        },
        # PiKE and VA keep 2 rows of each of the 7 domains (their min_samples): at B = 16 they move 2
        # rows of 16 (12.5%), at B = 32 18 rows; B = 16 was chosen for the updates it buys (below)
        "per_device_train_batch_size": batch,
        "learning_rate": 3.0e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, steps // 20),
        "max_steps": steps,
        "logging_steps": max(1, steps // 10),
        "eval_strategy": "steps",
        "eval_steps": max(1, steps // 4),  # the curves' points: 4 (6 cost 4% of a run)
        "per_device_eval_batch_size": 64,
        "save_strategy": "no",
        "report_to": "none",
        "data_seed": 0,
        "dataloader_num_workers": 0,
        "use_cpu": use_cpu,
        "disable_tqdm": True,
        "overwrite_output_dir": True,  # the benchmark's own scratch runs
    }


def _sizes(ctx: BenchContext) -> dict[str, Any]:
    # The vocabulary is 1024: at this model's size the head is a large part of a step (2048 tokens
    # cost 1.3× the step time, measured on one thread) and the rare tokens are never learned in the
    # steps given. Runs go as many at once as there are cores (one torch thread each). A run is
    # scored on 256 rows per domain spread over its test (a swarm member: validation) documents:
    # scoring the whole split cost a sixth of a run, the larger domains' thousands of rows. --quick is
    # the full arena's pipeline at a tenth of the corpus, 30 steps of the full batch, and the swarm's 2
    # best members measured on 2 seeds.
    if ctx.tiny:
        return {
            "scale": 0.04,
            "steps": 4,
            "batch": 32,
            "swarm": 4,
            "methods": ["odm", "doremi"],
            "jobs": 2,
            "max_documents": 30,
            "vocab": 512,
            "val_rows": 2,
            "replicate": (2, 2),
            "score_rows": 64,
        }
    if ctx.quick:
        return {
            "scale": 0.1,
            "steps": 30,
            "batch": 16,
            "swarm": 4,
            "methods": list(METHODS),
            "jobs": usable_cores(),
            "max_documents": None,
            "vocab": 1024,
            "val_rows": 8,
            "replicate": (2, 2),
            "score_rows": 256,
        }
    # Calibrated on 4 seeds of uniform, natural and temperature. At BPE 2048 and 64-token rows (the
    # same 819k training tokens each): 400 steps of 32 rows: natural − uniform 0.065, uniform's seed sd
    # 0.072 (0.9 sd apart); 800 steps of 16 rows: every loss 0.2–0.3 lower (the model is limited by
    # its updates, not its tokens), natural − uniform 4.4 sd. At BPE 1024: 600 steps of 64-token rows
    # fail (2.9 sd; temperature's sd half of natural − temperature); 800 steps of 64-token rows hold
    # (temperature's sd 0.036, 0.21 of natural − temperature). A learning rate of 1e-2 was worse. A run
    # trains in about 50 s on one thread; to fit the 45 minutes the whole arena may take on 2 cores,
    # the swarm has 8 Dirichlet members (not 12) and its 2 best are replicated on 3 seeds (not 3).
    return {
        "scale": 1.0,
        "steps": 800,
        "batch": 16,
        "swarm": 8,
        "methods": list(METHODS),
        "jobs": usable_cores(),
        "max_documents": None,
        "vocab": 1024,
        "val_rows": 64,
        "replicate": (2, 3),
        "score_rows": 256,
    }


def corpus_arena(ctx: BenchContext, methods: list[str] | None = None) -> tuple[Arena, dict[str, Any]]:
    """The arena on ``mixflow data corpus`` at the context's size (``methods``: the size's own when
    None), in the scratch folder every benchmark on this corpus shares (its swarm and runs are
    cached there), and the setting it records."""
    s = _sizes(ctx)
    root = ctx.scratch / "lm-arena"
    ctx.log("lm-arena: building the corpus (scale %g)", s["scale"])
    manifest = build_corpus(root / "corpus", scale=s["scale"], vocab_size=s["vocab"], progress=False)
    domains = [d.name for d in DOMAINS]
    sources = sources_from_dataset_info(root / "corpus", domains)
    split = split_domains(sources, root / "split", max_documents=s["max_documents"])
    devices = 0 if ctx.tiny else accelerators()  # the test suite's size stays on the CPU
    base = base_config(
        str(root / "corpus" / "tokenizer"),
        s["steps"],
        str(root / "tokenized"),
        s["val_rows"],
        s["batch"],
        use_cpu=devices == 0,
    )
    arena = Arena(
        train_dir=split.train,
        test_dir=split.test,
        val_dir=split.val,
        domains=domains,
        clean=[d.name for d in DOMAINS if d.clean],
        tokens=train_tokens(base, split.train, domains),
        base=base,
        work=root / "runs",
        seeds=ctx.seeds,
        jobs=s["jobs"],
        swarm=s["swarm"],
        methods=s["methods"] if methods is None else methods,
        log=ctx.log,
        replicate=s["replicate"],
        devices=devices,
        score_rows=s["score_rows"],
    )
    setting = {
        "corpus sha256": manifest["corpus_sha256"],
        "corpus scale": s["scale"],
        "model": f"Llama 2×128, untied head, BPE {s['vocab']}",
        "batch": base["per_device_train_batch_size"],
        "cutoff_len": base["cutoff_len"],
        "scored rows per domain": s["score_rows"],
        "parallel runs": devices or s["jobs"],
        "device": f"{devices} CUDA devices, one run each" if devices else "CPU, one torch thread per run",
    }
    return arena, setting


@register_benchmark(
    "lm-arena",
    claim="on real text of seven domains, the best static mixture (a RegMix swarm) beats the natural one with its whole "
    "interval, and every method is placed better / no different / worse than it, paired by seed",
    source="issue 20 (the arena); Aioli (Chen et al. 2025) on methods against stratified sampling",
    # full size: about 100 run-equivalents of ~50 s on one thread each, two at a time on 2 cores
    seeds=4,
)
def run(ctx: BenchContext) -> BenchResult:
    arena, setting = corpus_arena(ctx)
    result, summary, runs = run_arena(arena)
    result.compare("natural", "best static", TARGET, "lower", claim_range=(0.0, None))
    result.judge()
    result.setting.update({**setting, "baselines": list(BASELINES)})
    plots = [
        p
        for p in (
            curves_plot(ctx.out_dir / "lm-arena-curves.png", runs, arena.clean),
            weights_plot(ctx.out_dir / "lm-arena-weights.png", runs, arena.domains),
        )
        if p is not None
    ]
    result.plots = [p.name for p in plots]
    result.notes.append(f"recommendation: {summary['recommendation']}")
    return result
