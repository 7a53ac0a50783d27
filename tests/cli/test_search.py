"""mixflow search fit / propose from the command line, on a swarm drawn from a known mixing law."""

import json

import numpy as np
import yaml

from mixflow.cli.main import main


def _swarm(tmp_path, n=40):
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=n)
    y = 2.0 + np.exp(0.2 + x @ np.array([-2.0, 0.5, -1.0]))
    mix = tmp_path / "ratios.csv"
    mix.write_text("run,web,code,books\n" + "".join(f"r{i},{a:.6f},{b:.6f},{c:.6f}\n" for i, (a, b, c) in enumerate(x)))
    loss = tmp_path / "metrics.csv"
    loss.write_text("run,metric/web\n" + "".join(f"r{i},{v:.6f}\n" for i, v in enumerate(y)))
    return mix, loss


def test_fit_then_propose_under_a_repetition_cap(tmp_path, capsys):
    mix, loss = _swarm(tmp_path)
    out = tmp_path / "fit"
    assert (
        main(
            [
                "search",
                "fit",
                str(mix),
                "--metrics",
                str(loss),
                "--target",
                "metric/web",
                "--out",
                str(out),
                "--predict",
                str(mix),
                "--predict-metrics",
                str(loss),
            ]
        )
        == 0
    )
    fit = json.loads((out / "fit.json").read_text())
    assert fit["model"] == "loglinear" and fit["runs"] == 40 and fit["cv"]["spearman"] > 0.95
    assert fit["prediction"]["spearman"] > 0.99
    assert (out / "predictions.csv").read_text().splitlines()[0] == "run,predicted"
    # the law is lowest with everything on web; the cap allows web at most 0.5
    assert (
        main(
            [
                "search",
                "propose",
                str(out),
                "--tokens-per-run",
                "1000",
                "--max-epochs",
                "1",
                "--domain-tokens",
                "web=500,code=1e6,books=1e6",
                "--candidates",
                "20000",
                "--bootstrap",
                "10",
            ]
        )
        == 0
    )
    proposal = yaml.safe_load((out / "proposal.yaml").read_text())
    weights = dict(zip(proposal["dataset"].split(","), proposal["init_mixture_proportions"]))
    assert weights["web"] <= 0.5 + 1e-6 and weights["books"] > weights["code"]
    record = json.loads((out / "proposal.json").read_text())
    low, high = record["predicted interval"]
    assert low <= record["predicted"] <= high


def test_bad_input_is_one_line_per_problem_and_no_output(tmp_path, capsys):
    mix, loss = _swarm(tmp_path)
    assert (
        main(
            [
                "search",
                "fit",
                str(mix),
                "--metrics",
                str(loss),
                "--target",
                "metric/nope",
                "--out",
                str(tmp_path / "fit"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'metric/nope'" in err[0] and "matches no metric column" in err[0]
    assert not (tmp_path / "fit").exists()
    assert main(["search", "propose", str(tmp_path / "missing")]) == 2
    assert "not a search fit" in capsys.readouterr().err


def test_propose_refits_without_cross_validating_again(tmp_path, monkeypatch):
    mix, loss = _swarm(tmp_path)
    out = tmp_path / "fit"
    assert main(["search", "fit", str(mix), "--metrics", str(loss), "--target", "metric/web", "--out", str(out)]) == 0
    recorded = json.loads((out / "fit.json").read_text())["cv"]

    def no_cv(*args, **kwargs):
        raise AssertionError("propose cross-validated the fit again")

    monkeypatch.setattr("mixflow.search.fit.cross_validate", no_cv)
    assert main(["search", "propose", str(out), "--candidates", "2000", "--bootstrap", "3"]) == 0
    assert json.loads((out / "proposal.json").read_text())["cv"] == recorded
