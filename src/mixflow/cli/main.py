"""``mixflow``: train with a data mixture, plot a run, build the offline demo corpus, list algorithms.

Every user mistake ends with one line ``mixflow: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from mixflow.cli.export import add_export
from mixflow.cli.search import add_search
from mixflow.errors import ConfigError, ConfigErrors, MixflowError


def _cmd_train(args: argparse.Namespace) -> int:
    from mixflow.config.load import load_config
    from mixflow.config.parse import parse_overrides

    run = load_config(args.config, parse_overrides(args.overrides))
    from mixflow.recipes.train import format_table, run_training

    metrics = run_training(run, progress=not args.quiet)
    from mixflow.utils import distributed

    if distributed.is_main_process():
        print(format_table(metrics))
        print(f"outputs in {run.training['output_dir']}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from mixflow.cli.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from mixflow.data.demo import build_demo_corpus

    paths = build_demo_corpus(
        args.out_dir, max_bytes_per_domain=args.max_bytes, seed=args.seed, progress=not args.quiet
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_data_corpus(args: argparse.Namespace) -> int:
    from mixflow.data.corpus import build_corpus

    manifest = build_corpus(
        args.out_dir,
        scale=args.scale,
        seed=args.seed,
        vocab_size=None if args.vocab_size == 0 else args.vocab_size,
        progress=not args.quiet,
    )
    for name, d in manifest["domains"].items():
        print(
            f"{name:<10} {d['text_bytes']:>10} bytes  {d['documents']:>6} documents  {len(d['files']):>5} files  "
            f"{'clean' if d['clean'] else 'noisy'}"
        )
    print(f"corpus sha256 {manifest['corpus_sha256']}; manifest {args.out_dir}/manifest.json")
    return 0


def _cmd_data_preview(args: argparse.Namespace) -> int:
    from mixflow.config.load import load_config
    from mixflow.config.parse import parse_overrides
    from mixflow.recipes.preview import preview

    run = load_config(args.config, parse_overrides(args.overrides), check_outputs=False)
    domains = [d.strip() for d in args.domain.split(",")] if args.domain else None
    print("\n".join(preview(run, domains, args.n)))
    return 0


def _cmd_data_tokenize(args: argparse.Namespace) -> int:
    from mixflow.config.load import load_config
    from mixflow.config.parse import parse_overrides
    from mixflow.recipes.build import cache_domains

    run = load_config(args.config, parse_overrides(args.overrides), check_outputs=False)
    entries = cache_domains(run, progress=not args.quiet, overwrite_cache=args.overwrite or None, verify=args.verify)
    width = max(len("domain"), *(len(e.meta["key"]["domain"]) for e in entries))
    print(f"{'domain':<{width}}  {'documents':>10}  {'tokens':>12}  {'rows':>9}  {'state':<8}  entry")
    for e in entries:
        m = e.meta
        state = "reused" if e.reused else "built"
        print(
            f"{m['key']['domain']:<{width}}  {m['num_documents']:>10}  {m['num_tokens']:>12}  {m['num_rows']:>9}  "
            f"{state:<8}  {e.directory}"
        )
    return 0


def _cmd_data_classification_demo(args: argparse.Namespace) -> int:
    from mixflow.data.classification_demo import build_classification_demo

    paths = build_classification_demo(
        args.out_dir,
        synthetic_per_topic=args.per_topic,
        real_size=args.real_size,
        test_per_topic=args.test_per_topic,
        seed=args.seed,
    )
    print(f"synthetic (training domains): {', '.join(str(p) for p in paths['synthetic'].values())}")
    print(f"  {paths['flipped']} restaurant reviews carry a wrong 'positive' label")
    print(f"real (real_data): {paths['real']}")
    print(f"clean test sets (eval_data): {', '.join(str(p) for p in paths['test'].values())}")
    return 0


def _cmd_checkers(args: argparse.Namespace) -> int:
    from mixflow.config.load import load_config
    from mixflow.config.parse import parse_overrides
    from mixflow.recipes.checkers import format_checkers_report, run_checkers

    run = load_config(args.config, parse_overrides(args.overrides))
    print(format_checkers_report(run_checkers(run, progress=not args.quiet, force=args.force)))
    return 0


def _cmd_doremi(args: argparse.Namespace) -> int:
    from mixflow.config.parse import parse_overrides
    from mixflow.recipes.doremi import format_weights_table, run_pipeline
    from mixflow.utils import distributed

    result = run_pipeline(args.config, parse_overrides(args.overrides), progress=not args.quiet)
    if distributed.is_main_process():
        print(format_weights_table(result))
        print(f"outputs in {', '.join(result['output_dirs'].values())}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from mixflow.algorithms import available_algorithms, available_weighters, describe_params

    for title, table in (
        ("algorithms (train_type dynamic_mix, mixers:)", available_algorithms()),
        ("weighters (train_type dynamic_weight, weighters:)", available_weighters()),
    ):
        print(title)
        if not table:
            print("  (none registered)")
        for name, cls in table.items():
            print(f"  {name}: {cls.description}")
            for pname, ptype, default, help_text in describe_params(cls):
                print(f"      {pname} ({ptype}, default {default!r}): {help_text}")
    return 0


def _cmd_bench_list(args: argparse.Namespace) -> int:
    from mixflow.bench.base import available_benchmarks

    for name, bench in available_benchmarks().items():
        extra = f" [needs: {', '.join(bench.needs)}]" if bench.needs else ""
        print(f"{name}: {bench.claim} ({bench.source}){extra}")
    return 0


def _cmd_bench_run(args: argparse.Namespace) -> int:
    from mixflow.bench.runner import run_benchmarks, write_report

    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds: expected an integer >= 1, got {args.seeds}")
    for path in run_benchmarks(args.names, quick=args.quick, seeds=args.seeds, out=args.out, tiny=args.tiny):
        print(path.with_suffix(".md"))
    print(write_report(args.out))
    return 0


def _cmd_bench_report(args: argparse.Namespace) -> int:
    from mixflow.bench.runner import write_report

    print(write_report(args.dir))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: each paper's claim, an arena of all methods, the overhead")
    bench_sub = p.add_subparsers(dest="bench_command", required=True)
    b = bench_sub.add_parser("list", help="every benchmark with the claim it tests and its source")
    b.set_defaults(func=_cmd_bench_list)
    b = bench_sub.add_parser("run", help="run benchmarks; writes DIR/NAME.json, DIR/NAME.md, plots and DIR/report.md")
    b.add_argument("names", nargs="*", help="benchmark names (default: all)")
    b.add_argument("--quick", action="store_true", help="about a minute each (development)")
    b.add_argument("--tiny", action="store_true", help="seconds each (checks the outputs only)")
    b.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 5, 3 with --quick)")
    b.add_argument("--out", default="build/bench", help="output directory (default build/bench)")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=_cmd_bench_run)
    b = bench_sub.add_parser("report", help="merge every result in DIR into DIR/report.md")
    b.add_argument("dir")
    b.set_defaults(func=_cmd_bench_report)


def _cmd_arena(args: argparse.Namespace) -> int:
    from mixflow.bench.user_arena import run_user_arena
    from mixflow.config.parse import parse_overrides

    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else None  # noqa: E731
    rec = run_user_arena(
        args.config,
        parse_overrides(args.overrides),
        methods=split(args.methods),
        seeds=args.seeds,
        steps=args.steps,
        quick=args.quick,
        out=args.out,
        jobs=args.jobs,
        swarm=args.swarm,
        clean=split(args.clean),
        max_documents=args.max_documents,
    )
    print(f"recommendation: {rec['method']} on {rec['mixture']}: {rec['why']}")
    print(f"wrote {args.out}/arena.json, {args.out}/arena.md and {args.out}/recommendation.yaml")
    return 0


def _arena_parser(sub: Any) -> None:
    p = sub.add_parser(
        "arena",
        help="every method against the simple mixtures and the best static one, on your "
        "domains; recommends the mixture (and method) to train on",
    )
    p.add_argument("config", help="a mixflow train config: its domains, tokenizer and (proxy-sized) model")
    p.add_argument("overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest)")
    p.add_argument("--methods", default=None, help="comma-separated (default: every method)")
    p.add_argument("--seeds", type=int, default=3, help="scoring seeds (default 3)")
    p.add_argument("--steps", type=int, default=None, help="target steps of every run (default: max_steps, else 300)")
    p.add_argument("--quick", action="store_true", help="60 steps and a swarm of 8 unless given")
    p.add_argument(
        "--swarm", type=int, default=None, help="proxy runs that search the best static mixture (default 24)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="CPU runs at once, one torch thread each (default: one per usable CPU "
        "core); with CUDA devices (and no use_cpu), one run on each device",
    )
    p.add_argument("--clean", default=None, help="comma-separated domains of the target (default: all)")
    p.add_argument("--max-documents", type=int, default=None, help="read at most this many documents per domain")
    p.add_argument("--out", default="build/arena", help="output folder (default build/arena)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_arena)


def _data_parser(sub: Any) -> None:
    """``mixflow data ...``: the corpora and the tokenization cache."""
    p = sub.add_parser("data", help="data utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    d = data_sub.add_parser("demo", help="build the offline demo corpus (code, prose, arithmetic, random)")
    d.add_argument("out_dir")
    d.add_argument("--max-bytes", type=int, default=400_000, help="bytes per domain (default 400000)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_data_demo)
    d = data_sub.add_parser(
        "corpus", help="build the arena corpus from text this machine ships (7 domains, BPE tokenizer)"
    )
    d.add_argument("out_dir")
    d.add_argument(
        "--scale", type=float, default=1.0, help="multiplies every domain's byte budget (default 1: 16.2 MB)"
    )
    d.add_argument("--seed", type=int, default=0, help="the order files are taken in (default 0)")
    d.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary (default 4096; 0: no tokenizer)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_data_corpus)
    d = data_sub.add_parser("preview", help="a few rows per domain as the model sees them, targets marked")
    d.add_argument("config", help="YAML file: the training config whose domains are shown")
    d.add_argument("overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest)")
    d.add_argument("--domain", default=None, help="comma-separated domains (default: all)")
    d.add_argument("-n", type=int, default=3, help="rows per domain (default 3)")
    d.set_defaults(func=_cmd_data_preview)
    d = data_sub.add_parser("tokenize", help="tokenize a config's domains once into the cache")
    d.add_argument("config", help="YAML file: the training config whose domains are tokenized")
    d.add_argument("overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest)")
    d.add_argument("--overwrite", action="store_true", help="rebuild entries even when they match (overwrite_cache)")
    d.add_argument("--verify", action="store_true", help="also hash every file's content and rebuild on a mismatch")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_data_tokenize)
    d = data_sub.add_parser("classification-demo", help="build the offline IMP/DIMP text-classification demo")
    d.add_argument("out_dir")
    d.add_argument("--per-topic", type=int, default=500, help="synthetic training examples per topic (default 500)")
    d.add_argument("--real-size", type=int, default=400, help="clean real examples (default 400)")
    d.add_argument("--test-per-topic", type=int, default=150, help="clean test examples per topic (default 150)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_data_classification_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixflow", description="Dynamic data mixing and reweighting for LM training.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train as a YAML config says (key=value overrides follow it)")
    p.add_argument("config", help="YAML file")
    p.add_argument("overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("plot", help="PNG of weights and per-domain losses of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output PNG (default: RUN_DIR/<algorithm>_weights.png)")
    p.set_defaults(func=_cmd_plot)

    _data_parser(sub)
    _arena_parser(sub)

    p = sub.add_parser("checkers", help="train IMP/DIMP's quality and diversity checkers and cache P'(y|x), Q(y|x)")
    p.add_argument("config", help="YAML file: a classification config with real_data")
    p.add_argument("overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest)")
    p.add_argument("--force", action="store_true", help="retrain both checkers and recompute the cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=_cmd_checkers)

    p = sub.add_parser("list", help="registered algorithms and weighters with their parameters")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("doremi", help="DoReMi's three steps (reference, proxy, target) from one YAML config")
    p.add_argument("config", help="YAML file: shared keys plus reference:/proxy:/target:/doremi: sections")
    p.add_argument(
        "overrides", nargs="*", help="key=value, value parsed as YAML (dotted keys nest, e.g. proxy.update_step=1)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=_cmd_doremi)
    _add_bench(sub)
    add_search(sub)
    add_export(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # --quiet: no progress bars, and no progress lines in a log either. The levels are the command's:
    # restored when it returns, so a program (or a test) that calls main keeps its own logging.
    levels = {name: logging.getLogger(name).level for name in ("mixflow", "mixflow.progress")}
    logging.getLogger("mixflow").setLevel(logging.INFO)
    logging.getLogger("mixflow.progress").setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.NOTSET)
    try:
        return int(args.func(args) or 0)
    except (MixflowError, FileNotFoundError) as err:
        # what the user gave is wrong: one line each, naming it; any other exception is a defect and keeps
        # its traceback
        messages = err.messages if isinstance(err, ConfigErrors) else (str(err).splitlines() or [str(err)])
        for message in messages:  # each problem on its own line
            print(f"mixflow: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
