"""``mixflow search``: fit a regression on a swarm of proxy runs and propose the mixture it predicts best."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger("mixflow.search")


def _cmd_plan(args: argparse.Namespace) -> int:
    from mixflow.search.plan import plan_swarm

    path = plan_swarm(
        args.config,
        args.runs,
        args.out,
        args.prior,
        args.concentration,
        args.seed,
        args.min_distance,
        args.overwrite,
        args.reuse,
    )
    print(
        f"search plan: wrote {path} and {args.runs} configs in {path.parent / 'runs'} "
        "(run them with mixflow train, one per proxy, or your scheduler)"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from mixflow.search.run import run_swarm

    done = run_swarm(args.dir, args.jobs, args.threads)
    print(f"search run: {done['done']} runs trained, {done['skipped']} already finished")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from mixflow.search.collect import collect

    print(f"search collect: wrote {collect(args.dir)}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from mixflow.search.fit import fit_table, predict_table, write_fit

    fit = fit_table(args.table, args.target, args.metrics, args.model, args.folds, args.seed)
    cv = fit.cv
    logger.info(
        "search fit: %s on %d runs of %s, target %s: %d-fold cross-validated Spearman %.3f, Pearson %.3f, MAE %.4g",
        fit.model,
        fit.runs,
        args.table,
        fit.target,
        fit.folds,
        cv["spearman"],
        cv["pearson"],
        cv["mae"],
    )
    predictions = None
    if args.predict:
        key, keys, predicted, found = predict_table(fit, args.predict, args.predict_metrics)
        fit.prediction.update({"table": args.predict, **found})
        predictions = (key, keys, predicted)
        if found:
            logger.info(
                "search fit: on %s (%d runs): Spearman %.3f, Pearson %.3f, MAE %.4g",
                args.predict,
                found["runs"],
                found["spearman"],
                found["pearson"],
                found["mae"],
            )
    path = write_fit(fit, args.out, predictions)
    print(f"search fit: wrote {path}" + (f" and {path.parent / 'predictions.csv'}" if predictions else ""))
    return 0


def _pairs(values: list[str], option: str) -> dict[str, float]:
    from mixflow.config.errors import ConfigError

    out = {}
    for item in values:
        for part in item.split(","):
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"{option}: expected DOMAIN=NUMBER, got {part!r}") from None
    return out


def _cmd_propose(args: argparse.Namespace) -> int:
    from mixflow.search.proposal import propose, write_proposal

    proposal = propose(
        args.dir,
        fixed=_pairs(args.fix, "--fix"),
        prior=args.prior,
        kl=args.kl,
        l1=args.l1,
        tokens_per_run=args.tokens_per_run,
        max_epochs=args.max_epochs,
        domain_tokens=_pairs(args.domain_tokens, "--domain-tokens"),
        top_k=args.top_k,
        candidates=args.candidates,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    path = write_proposal(proposal, args.out or args.dir)
    low, high = proposal["predicted interval"]
    logger.info(
        "search propose: predicted target %.4g [%.4g, %.4g] (bootstrap over the swarm)",
        proposal["predicted"],
        low,
        high,
    )
    print(f"search propose: wrote {path}")
    return 0


def add_search(sub: Any) -> None:
    """The ``search`` subcommands."""
    search = sub.add_parser("search", help="choose a mixture from a swarm of proxy runs (RegMix, mixing laws)")
    commands = search.add_subparsers(dest="search_command", required=True)

    _add_plan(commands)
    p = commands.add_parser("run", help="train the planned proxies here, JOBS at a time (resumable)")
    p.add_argument("dir", help="the folder of a mixflow search plan")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1; 0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_run)

    p = commands.add_parser("collect", help="the finished proxies' per-domain validation losses into DIR/runs.csv")
    p.add_argument("dir", help="the folder of a mixflow search plan")
    p.set_defaults(func=_cmd_collect)

    p = commands.add_parser(
        "fit", help="fit a regression from mixture to target; cross-validate; predict another table"
    )
    p.add_argument("table", help="CSV: one row per run, a key column (run or index), one column per domain's weight")
    p.add_argument("--metrics", help="CSV of the runs' metrics, joined on the key (else they are in TABLE)")
    p.add_argument("--target", required=True, help="a column, mean(col, ...) (globs allowed) or 0.5*a + 0.5*b")
    p.add_argument("--model", default="loglinear", help="linear, loglinear (default), lightgbm or gp")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predict", help="another table of runs to predict (its key column and 'predicted' are written)")
    p.add_argument("--predict-metrics", help="the metrics of --predict, joined on its key")
    p.add_argument("--out", required=True, help="folder for fit.json (and predictions.csv)")
    p.set_defaults(func=_cmd_fit)

    _add_propose(commands)


def _add_plan(commands: Any) -> None:
    """``mixflow search plan``."""
    p = commands.add_parser("plan", help="draw a swarm's mixtures and write one mixflow train config per proxy")
    p.add_argument("config", help="a mixflow train config of the proxy (its domains, model, steps)")
    p.add_argument("--runs", type=int, required=True, help="how many proxies (O(K): RegMix used 512 for 17 domains)")
    p.add_argument("--prior", default="natural", help="natural (default: token counts), uniform, or DOMAIN=W,...")
    p.add_argument(
        "--concentration", type=float, default=1.0, help="scales the Dirichlet strengths (higher: nearer the prior)"
    )
    p.add_argument(
        "--min-distance", type=float, default=0.1, help="least L1 distance between two mixtures (default 0.1)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for plan.csv, plan.json and runs/NNNN.yaml")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plan in --out")
    p.add_argument(
        "--reuse",
        help="an earlier proposal's folder: keep its ratios among the domains that stay, vary only "
        "their total and the added domains (Olmix's mixture reuse)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_plan)


def _add_propose(commands: Any) -> None:
    """``mixflow search propose``."""
    p = commands.add_parser("propose", help="the mixture that minimises a fit's prediction, under constraints")
    p.add_argument("dir", help="the folder of a mixflow search fit (its fit.json)")
    p.add_argument("--fix", action="append", default=[], help="DOMAIN=WEIGHT: a fixed weight (repeatable)")
    p.add_argument("--prior", help="uniform, or DOMAIN=WEIGHT,...: the centre of --kl/--l1 and of half the candidates")
    p.add_argument("--kl", type=float, help="largest KL(mixture ‖ prior), in nats")
    p.add_argument("--l1", type=float, help="largest L1 distance to the prior")
    p.add_argument("--tokens-per-run", type=float, help="the target run's tokens (with --max-epochs: repetition caps)")
    p.add_argument("--max-epochs", type=float, help="the most times a domain's tokens may be read")
    p.add_argument("--domain-tokens", action="append", default=[], help="DOMAIN=TOKENS,... for the repetition caps")
    p.add_argument("--top-k", type=int, default=128, help="average of the best K candidates (RegMix: 128)")
    p.add_argument("--candidates", type=int, default=100_000, help="random mixtures predicted (RegMix: 100000)")
    p.add_argument("--bootstrap", type=int, default=50, help="refits on resampled runs for the interval (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where proposal.yaml and proposal.json go (default: DIR)")
    p.set_defaults(func=_cmd_propose)
