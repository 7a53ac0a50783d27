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
    assert first["init_mixture_proportions"] == pytest.approx(
        [float(rows[3][d]) for d in ("code", "prose", "arithmetic", "random")], abs=1e-5
    )
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


def test_relative_paths_of_the_config_still_resolve_from_the_proxy_configs_and_overwrite_archives(tmp_path, demo_data):  # noqa: F811
    import os
    import shutil

    shutil.copytree(demo_data, tmp_path / "data")
    cfg_path = _config(tmp_path, demo_data)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["dataset_dir"] = "data"  # relative to the config's folder
    cfg_path.write_text(yaml.safe_dump(cfg))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)  # the command runs from another folder
    try:
        assert main(["search", "plan", str(cfg_path), "--runs", "3", "--prior", "uniform", "--out", "swarm"]) == 0
        planned = yaml.safe_load((elsewhere / "swarm" / "runs" / "0001.yaml").read_text())
        assert planned["dataset_dir"] == str((tmp_path / "data").resolve())
        load_config(elsewhere / "swarm" / "runs" / "0001.yaml", check_outputs=False)
        assert (
            main(
                [
                    "search",
                    "plan",
                    str(cfg_path),
                    "--runs",
                    "3",
                    "--prior",
                    "uniform",
                    "--seed",
                    "1",
                    "--out",
                    "swarm",
                    "--overwrite",
                ]
            )
            == 0
        )
        assert (elsewhere / "swarm" / "previous-1" / "plan.csv").is_file()
        assert (elsewhere / "swarm" / "previous-1" / "runs" / "0001.yaml").is_file()
    finally:
        os.chdir(cwd)


def test_collect_leaves_out_a_stopped_run_and_reads_the_final_evaluation(tmp_path, caplog):
    import json

    from mixflow.search.collect import collect

    out = tmp_path / "swarm"
    (out / "runs").mkdir(parents=True)
    (out / "plan.json").write_text(json.dumps({"domains": ["a", "b"]}))
    (out / "plan.csv").write_text("run,a,b\n0000,0.5,0.5\n0001,0.2,0.8\n0002,0.9,0.1\n")
    for name, result in (
        ("0000", {"steps": 4, "val_loss": {"a": 2.5, "b": 3.5}}),
        ("0001", {"stopped": "diverged at step 3", "steps": 3}),
    ):
        run_dir = out / "runs" / name
        run_dir.mkdir()
        (run_dir / "mixflow_results.json").write_text(json.dumps(result))
    for name in ("0000", "0001", "0002"):
        (out / "runs" / f"{name}.yaml").write_text(yaml.safe_dump({"output_dir": str(out / "runs" / name)}))
    collect(out)
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert [(r["run"], r["metric/a"], r["metric/b"]) for r in rows] == [("0000", "2.5", "3.5")]
    assert "1 runs have not finished" in caplog.text and "1 runs stopped early (diverged" in caplog.text
