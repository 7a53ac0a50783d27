"""``mixflow export RUN_DIR --to megatron|olmo|yaml``: a run's learned weights for another trainer."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mixflow.errors import ConfigError, ConfigErrors
from mixflow.recipes.export import run_weights
from mixflow.recipes.export_formats import FORMATS, render
from mixflow.utils.jsonlog import write_text_atomic


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
    weights = run_weights(args.run_dir, step=args.step, average=args.average)
    text = render(weights, args.to, paths)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"mixflow export: {weights.origin} -> {args.out}", file=sys.stderr)
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
    p.add_argument(
        "--step",
        type=int,
        help="the weights decided by step N, its weights-log lines up to N (default: the final ones)",
    )
    p.add_argument("--average", action="store_true", help="DoReMi's average ᾱ, else the mean over the run's steps")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        help="DOMAIN=PATH[,PATH...]: the domain's data in the target format (repeatable)",
    )
    p.add_argument("--out", help="write to this file (default: standard output)")
    p.set_defaults(func=_cmd_export)
