"""``mixflow export RUN_DIR --to megatron|olmo|yaml``: a run's learned weights for another trainer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mixflow.errors import ConfigError, ConfigErrors
from mixflow.recipes.export import run_weights
from mixflow.recipes.export_formats import FORMATS, render
from mixflow.recipes.run_record import DOMAINS_FILE, read_domains


def _paths(values: list[str]) -> dict[str, list[str]]:
    """``--path DOMAIN=PATH[,PATH...]`` (repeatable) as {domain: [paths]}; every bad one named at once."""
    out: dict[str, list[str]] = {}
    errors = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            errors.append(f"--path: expected DOMAIN=PATH[,PATH...], got {value!r}")
        else:
            out[name] = [p for p in rest.split(",") if p]
    if errors:
        raise ConfigErrors(errors)
    return out


def _cmd_export(args: argparse.Namespace) -> int:
    if args.step is not None and args.average:
        raise ConfigError("--step and --average: expected one of them, not both")
    paths = _paths(args.path)
    run_dir = Path(args.run_dir)
    weights = run_weights(run_dir, step=args.step, average=args.average)
    recorded: dict[str, Any] = {}
    if args.to != "yaml" and (run_dir / DOMAINS_FILE).is_file():
        recorded = {d["name"]: d for d in read_domains(run_dir)["domains"]}
    missing: dict[str, Any] = {"format": "unrecorded", "paths": []}
    text = render(weights, args.to, {n: recorded.get(n, missing) for n in weights.weights}, paths)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        print(f"mixflow export: {weights.origin} -> {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        print(f"mixflow export: {weights.origin}", file=sys.stderr)
    return 0


def add_export(sub: Any) -> None:
    """The ``export`` subcommand."""
    p = sub.add_parser(
        "export", help="a run's learned weights as a Megatron blend, an OLMo-core mixture or mixflow YAML"
    )
    p.add_argument("run_dir", help="a mixflow train output_dir")
    p.add_argument("--to", required=True, choices=FORMATS, help="megatron (--data-path blend), olmo or yaml")
    p.add_argument("--step", type=int, help="the weights in force at step N (default: the final ones)")
    p.add_argument("--average", action="store_true", help="DoReMi's average ᾱ, else the mean over the run's steps")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        help="DOMAIN=PATH[,PATH...]: the domain's data in the target format (repeatable)",
    )
    p.add_argument("--out", help="write to this file (default: standard output)")
    p.set_defaults(func=_cmd_export)
