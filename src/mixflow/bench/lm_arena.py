"""``lm-arena``: every mixing method against the simple mixtures and the best static one, on real text.

The corpus is ``mixflow data corpus`` (seven domains from text this machine ships, sizes 40× apart,
a 2048-token BPE); a small Llama with an untied head (PiKE and VA measure its gradients); the same
target steps for every method, each trained exactly as ``mixflow train`` trains it with its
documented defaults, several runs at once, one torch thread each (:mod:`mixflow.bench.arena`,
:mod:`mixflow.bench.arena_compare`).
"""

from __future__ import annotations

from typing import Any

from mixflow.bench.arena import BASELINES, METHODS, Arena
from mixflow.bench.arena_compare import run_arena
from mixflow.bench.arena_compute import arena_floor, cpu_bf16_is_faster, eval_every
from mixflow.bench.arena_data import split_domains, train_tokens
from mixflow.bench.arena_plots import curves_plot, weights_plot
from mixflow.bench.arena_runs import accelerators, cuda_bf16, usable_cores
from mixflow.bench.arena_scores import TARGET
from mixflow.bench.base import BenchContext, BenchResult, register_benchmark
from mixflow.data.corpus import DOMAINS, build_corpus
from mixflow.data.sources import sources_from_dataset_info

#: The model's width and the tokens of a training row.
HIDDEN, ROW = 128, 64


def base_config(
    tokenizer: str,
    steps: int,
    tokenized: str,
    val_rows: int = 64,
    batch: int = 16,
    use_cpu: bool = True,
    bf16: bool = False,
) -> dict[str, Any]:
    """The shared ``mixflow train`` keys of every arena run on the corpus. ``val_rows`` per domain are
    held out for the periodic evaluations and the methods that read held-out losses (a count, not a
    fraction: 5% of the largest domain was 60% of an evaluation's cost and tells no more).
    ``use_cpu``: False where the runs go one per accelerator. ``bf16``: train under bfloat16
    autocast (the weights, gradients and optimizer stay float32; the loss is float32)."""
    model: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": 344,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": ROW,
        "tie_word_embeddings": False,
    }
    if bf16 and use_cpu:
        # PyTorch's CPU flash attention is 5× slower backward in bfloat16 than in float32; the eager
        # attention's products go at the bfloat16 rate (100 steps 23-38% shorter than in float32, with
        # the flash attention 7-13%)
        model["attn_implementation"] = "eager"
    return {
        "tokenizer": tokenizer,
        "tokenized_dir": tokenized,
        "cutoff_len": ROW,
        "val_size": val_rows,
        "model_config": model,
        # PiKE and VA keep 2 rows of each of the 7 domains (their min_samples): at B = 16 they move 2
        # rows of 16 (12.5%), at B = 32 18 rows; B = 16 was chosen for the updates it buys (below)
        "per_device_train_batch_size": batch,
        "learning_rate": 3.0e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, steps // 20),
        "max_steps": steps,
        "logging_steps": max(1, steps // 10),
        "eval_strategy": "steps",
        # steps // 6 put the sixth evaluation two steps before the end and added a seventh at it
        "eval_steps": eval_every(steps),
        "bf16": bf16,
        "per_device_eval_batch_size": 64,
        "save_strategy": "no",
        "report_to": "none",
        "data_seed": 0,
        "dataloader_num_workers": 0,
        "use_cpu": use_cpu,
        "disable_tqdm": True,
        "overwrite_output_dir": True,  # the benchmark's own scratch runs
    }


# How the full size (the last one in _sizes) was chosen.
# Cheaper sizes tried for the 45 minutes (each a whole arena, 4 seeds, timed on the idle 2 cores):
# BPE 1024 with 48-token rows, 256 scored rows per domain, the swarm's 2 best replicated: 39 min,
# but the best static mixture's seed sd was 0.36 of the natural → best-static gap (target ≤ 0.25)
# and natural − uniform 2.8 of it (target > 4); BPE 1024 with 64-token rows, 4 evaluations a run,
# 8 Dirichlet members: 46 min, 0.31 and 3.7 sd, and natural no different from the best static
# (UniMax, chosen by the swarm; the natural mixture's seed sd 0.074 against 0.051 at BPE 2048);
# 600 steps of 64-token rows failed a 4-seed pilot (2.9 sd); hidden size 96 with a 256-wide MLP
# (26% less time a run) failed a 5-seed pilot of uniform, natural and temperature: seed sd / gap
# 0.43, natural − uniform 1.8 sd (a smaller model narrows the mixture effects, widens the noise);
# 48-token rows at BPE 2048 failed it too (0.32, 2.3 sd; with Adam β2 = 0.95: 0.26, 3.0 sd), its
# temperature seeds split in two groups 0.1 apart, every domain shifted together; one layer (30% less
# time) reached a lower loss but a smaller mixture effect: 0.39, 2.0 sd.
# Calibrated on 4 seeds of uniform, natural and temperature, the same 819k training tokens each:
# 400 steps of 32 rows: natural − uniform 0.065, uniform's seed sd 0.072 (0.9 sd apart; fixing the
# data seed and varying only the model's changed nothing: 0.073 and 0.054); 800 steps of 16 rows:
# every loss 0.2–0.3 lower (the model is limited by its updates, not its tokens), natural − uniform
# 0.186 with uniform's sd 0.043 (4.4 sd apart), temperature 0.017 below uniform. A learning rate of
# 1e-2 was worse. A static run took 62 s in float32 (two at a time), 41-42 under bfloat16 autocast.
def _sizes(ctx: BenchContext) -> dict[str, Any]:
    # The vocabulary is 2048: at this model's size the head is 40% of the linear layers' multiply-adds
    # (4096 tokens cost 1.6× the step time, measured on one thread) and the rare tokens are never
    # learned in the steps given.
    # Runs go as many at once as there are cores (one torch thread each). --quick is the full
    # arena's pipeline at a tenth of the corpus, 30 steps of the full batch, and the swarm's 2 best
    # members measured on 2 seeds (not 3 on 3): about 3 minutes on 2 cores.
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
            "vocab": 2048,
            "val_rows": 8,
            "replicate": (2, 2),
        }
    return {
        "scale": 1.0,
        "steps": 800,
        "batch": 16,
        "swarm": 12,
        "methods": list(METHODS),
        "jobs": usable_cores(),
        "max_documents": None,
        "vocab": 2048,
        "val_rows": 64,
        "replicate": (3, 3),
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
        bf16=cuda_bf16() if devices else cpu_bf16_is_faster(s["batch"] * ROW, HIDDEN, s["vocab"]),
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
    )
    setting = {
        "corpus sha256": manifest["corpus_sha256"],
        "corpus scale": s["scale"],
        "model": f"Llama 2×128, untied head, BPE {s['vocab']}",
        "precision": "bf16 autocast (fp32 weights, optimizer and loss)" if base["bf16"] else "fp32",
        "batch": base["per_device_train_batch_size"],
        "cutoff_len": base["cutoff_len"],
        "parallel runs": devices or s["jobs"],
        "device": f"{devices} CUDA devices, one run each" if devices else "CPU, one torch thread per run",
    }
    return arena, setting


@register_benchmark(
    "lm-arena",
    claim="on real text of seven domains, the best static mixture (a RegMix swarm) beats the natural one with its whole "
    "interval, and every method is placed better / no different / worse than it, paired by seed",
    source="issue 20 (the arena); Aioli (Chen et al. 2025) on methods against stratified sampling",
    # under bfloat16 autocast the whole arena took 44 minutes from nothing on the idle 2 cores (64 in
    # float32), its linear layers' matrix products 15 of them at this machine's bfloat16 peak
    # (README "Results")
    seeds=4,
)
def run(ctx: BenchContext) -> BenchResult:
    arena, setting = corpus_arena(ctx)
    result, summary, runs = run_arena(arena)
    result.compare("natural", "best static", TARGET, "lower", claim_range=(0.0, None))
    result.judge()
    result.setting.update({**setting, "baselines": list(BASELINES)})
    if not arena.devices:  # what the runs cost in matrix products, and the floor on this machine
        result.setting["compute"] = arena_floor(arena, runs, result.setting)
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
