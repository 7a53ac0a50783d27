"""Mixture reuse: the earlier proposal's ratios among kept domains are frozen into one virtual domain,
the swarm varies only it and the added domains, and the proposal expands back to every domain."""

import csv
import json

import numpy as np
import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.errors import ConfigError
from mixflow.search.reuse import VIRTUAL, earlier_proposal, plan_reuse, runs_saved
from tests.cli.test_cli import _config, demo_data  # noqa: F401  (fixture)


def test_kept_ratios_are_frozen_added_domains_vary_removed_ones_cost_nothing():
    reuse = plan_reuse({"web": 0.5, "code": 0.3, "books": 0.2}, ["code", "web", "math"])
    assert reuse.columns == [VIRTUAL, "math"] and reuse.removed == ["books"] and reuse.added == ["math"]
    assert reuse.ratios == pytest.approx({"code": 0.375, "web": 0.625})
    full = reuse.expand(np.array([[0.8, 0.2]]))[0]
    assert full == pytest.approx([0.3, 0.5, 0.2]) and full.sum() == pytest.approx(1.0)
    assert reuse.reduce(np.array([0.25, 0.25, 0.5])) == pytest.approx([0.5, 0.5])
    assert runs_saved(16, reuse) == 8  # 3 domains at 8 runs per dimension
    with pytest.raises(ConfigError, match="nothing to reuse"):
        plan_reuse({"books": 1.0}, ["code", "web"])


def test_an_earlier_proposal_that_is_not_one_is_a_one_line_error(tmp_path):
    (tmp_path / "proposal.json").write_text("{}")
    with pytest.raises(ConfigError, match="--reuse: .*proposal.json: not a mixflow search proposal"):
        earlier_proposal(tmp_path)


def test_plan_collect_fit_propose_with_reuse_trains_every_domain_on_the_frozen_ratios(tmp_path, demo_data):  # noqa: F811
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "proposal.json").write_text(
        json.dumps({"mixture": {"code": 0.4, "prose": 0.4, "random": 0.2, "web": 0.5}})
    )
    cfg_path = _config(tmp_path, demo_data)
    out = tmp_path / "swarm"
    assert (
        main(
            [
                "search",
                "plan",
                str(cfg_path),
                "--runs",
                "10",
                "--prior",
                "uniform",
                "--reuse",
                str(earlier),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    plan = json.loads((out / "plan.json").read_text())
    assert (
        plan["columns"] == [VIRTUAL, "arithmetic"] and plan["reuse"]["removed"] == ["web"] and plan["runs_saved"] == 10
    )
    rows = list(csv.DictReader(open(out / "plan.csv")))
    cfg = yaml.safe_load((out / "runs" / "0003.yaml").read_text())
    code, prose, arithmetic, random = cfg["init_mixture_proportions"]  # the config's order
    assert code == pytest.approx(prose, abs=2e-6) and code == pytest.approx(2 * random, abs=2e-6)
    assert arithmetic == pytest.approx(float(rows[3]["arithmetic"]), abs=2e-6)
    for i, row in enumerate(rows):  # stand-in results: more arithmetic is better here
        run_dir = out / "runs" / f"{i:04d}"
        run_dir.mkdir(parents=True)
        loss = 3.0 - float(row["arithmetic"])
        (run_dir / "mixflow_results.json").write_text(
            json.dumps({"val_loss": dict.fromkeys(["code", "prose", "arithmetic", "random"], loss)})
        )
    assert main(["search", "collect", str(out)]) == 0
    assert list(csv.DictReader(open(out / "runs.csv")))[0].keys() >= {VIRTUAL, "arithmetic", "metric/code"}
    assert (
        main(
            [
                "search",
                "fit",
                str(out / "runs.csv"),
                "--target",
                "mean(metric/*)",
                "--model",
                "linear",
                "--folds",
                "2",
                "--out",
                str(out / "fit"),
            ]
        )
        == 0
    )
    assert main(["search", "propose", str(out / "fit"), "--candidates", "5000", "--bootstrap", "5"]) == 0
    proposal = yaml.safe_load((out / "fit" / "proposal.yaml").read_text())
    assert proposal["dataset"] == "code,prose,arithmetic,random"
    code, prose, arithmetic, random = proposal["init_mixture_proportions"]
    assert sum(proposal["init_mixture_proportions"]) == pytest.approx(1.0) and arithmetic > 0.5
    assert code == pytest.approx(prose) and code == pytest.approx(2 * random)


def test_reuse_with_no_added_domain_needs_no_run(tmp_path, demo_data, capsys):  # noqa: F811
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "proposal.json").write_text(
        json.dumps({"mixture": {"code": 0.4, "prose": 0.4, "random": 0.1, "arithmetic": 0.1, "web": 0.5}})
    )
    assert (
        main(
            [
                "search",
                "plan",
                str(_config(tmp_path, demo_data)),
                "--runs",
                "4",
                "--reuse",
                str(earlier),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "no domain was added (removed: web), so no run is needed" in capsys.readouterr().err
