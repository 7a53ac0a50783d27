"""mixflow search plan: the swarm's mixtures cover the simplex around the prior; every proxy config is
the user's config with its own mixture and output folder, validated before anything is written."""

import csv

import numpy as np
import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.errors import ConfigError
from mixflow.config.load import load_config
from mixflow.search.plan import draw_mixtures, parse_prior
from tests.cli.test_cli import _config, demo_data  # noqa: F401  (fixture)


def test_draws_hold_the_prior_and_uniform_and_keep_their_distance():
    prior = np.array([0.7, 0.2, 0.05, 0.05])
    mixtures, used = draw_mixtures(prior, 24, seed=1, min_distance=0.2)
    assert mixtures.shape == (24, 4) and np.allclose(mixtures.sum(axis=1), 1.0)
    assert np.allclose(mixtures[0], prior) and np.allclose(mixtures[1], 0.25)
    gaps = [np.abs(a - b).sum() for i, a in enumerate(mixtures) for b in mixtures[:i]]
    assert used == 0.2 and min(gaps) >= 0.2
    crowded, lowered = draw_mixtures(np.array([0.5, 0.5]), 40, seed=0, min_distance=0.5)
    assert len(crowded) == 40 and lowered < 0.5  # two domains have no room for 40 runs 0.5 apart


def test_priors():
    assert np.allclose(parse_prior("uniform", ["a", "b"], None), [0.5, 0.5])
    assert np.allclose(parse_prior("natural", ["a", "b"], {"a": 300, "b": 100}), [0.75, 0.25])
    assert np.allclose(parse_prior("b=1,a=3", ["a", "b"], None), [0.75, 0.25])
    with pytest.raises(ConfigError, match="expected 2 weights"):
        parse_prior("0.2,0.3,0.5", ["a", "b"], None)


def test_plan_writes_one_valid_config_per_run_and_refuses_to_overwrite(tmp_path, demo_data):  # noqa: F811
    cfg_path = _config(tmp_path, demo_data, component={"name": "odm"}, train_type="dynamic_mix")
    out = tmp_path / "swarm"
    assert main(["search", "plan", str(cfg_path), "--runs", "6", "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "plan.csv")))
    assert [r["run"] for r in rows] == ["0000", "0001", "0002", "0003", "0004", "0005"]
    first = yaml.safe_load((out / "runs" / "0003.yaml").read_text())
    assert first["train_type"] == "static" and "component" not in first and first["max_steps"] == 6
    assert first["init_mixture_proportions"] == pytest.approx([float(rows[3][d]) for d in ("code", "prose", "arithmetic", "random")], abs=1e-5)
    assert first["output_dir"].endswith("swarm/runs/0003")
    load_config(out / "runs" / "0003.yaml", check_outputs=False)
    assert main(["search", "plan", str(cfg_path), "--runs", "6", "--out", str(out)]) == 2


def test_run_then_collect_gives_the_table_fit_reads_and_a_rerun_skips_finished_runs(tmp_path, demo_data):  # noqa: F811
    cfg_path = _config(tmp_path, demo_data, eval_strategy="steps", eval_steps=4, save_strategy="no", max_steps=4)
    out = tmp_path / "swarm"
    assert main(["search", "plan", str(cfg_path), "--runs", "3", "--prior", "uniform", "--out", str(out)]) == 0
    assert main(["search", "collect", str(out)]) == 2  # nothing finished yet: one line, no table
    assert main(["search", "run", str(out), "--jobs", "2"]) == 0
    assert main(["search", "collect", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert [r["run"] for r in rows] == ["0000", "0001", "0002"]
    assert all(float(r["metric/code"]) > 0 for r in rows) and float(rows[0]["code"]) == pytest.approx(0.25)
    from mixflow.search.tables import load_table

    table = load_table(out / "runs.csv")
    assert table.domains == ["code", "prose", "arithmetic", "random"] and len(table.metrics) == 4
    stamp = (out / "runs" / "0001" / "mixflow_results.json").stat().st_mtime_ns
    assert main(["search", "run", str(out)]) == 0  # all finished: nothing retrained
    assert (out / "runs" / "0001" / "mixflow_results.json").stat().st_mtime_ns == stamp
