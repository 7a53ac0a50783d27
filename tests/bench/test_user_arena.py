"""`mixflow arena CONFIG.yaml`: the arena on a user's own domains (a tiny config), its files and its
recommendation, and every config mistake reported at once before anything trains."""

import json

import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.load import load_config
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    assert main(["data", "demo", str(out), "--max-bytes", "20000", "--quiet"]) == 0
    return out


def _config(tmp_path, demo_data):
    cfg = {
        "dataset": "code,prose,arithmetic",
        "dataset_dir": str(demo_data),
        "tokenizer": "byte",
        "cutoff_len": 32,
        "max_samples": 40,
        "model_config": TINY_MODEL,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "output_dir": str(tmp_path / "x"),
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_arena_on_the_users_domains_recommends_a_mixture_ready_to_train(tmp_path, demo_data, capsys, caplog):
    config, out = _config(tmp_path, demo_data), tmp_path / "arena"
    command = [
        "arena",
        str(config),
        "--methods",
        "odm",
        "--seeds",
        "2",
        "--steps",
        "4",
        "--swarm",
        "3",
        "--clean",
        "code,prose",
        "--out",
        str(out),
        "--max-documents",
        "20",
    ]
    assert main(command) == 0
    payload = json.loads((out / "arena.json").read_text())
    methods = {row["method"] for row in payload["rows"]}
    assert {"uniform", "natural", "temperature", "unimax", "best static", "odm"} <= methods
    against_best = {c["method"] for c in payload["comparisons"] if c["baseline"] == "best static"}
    assert against_best == methods - {"best static"}
    rec = payload["recommendation"]
    assert set(rec) == {"mixture", "method", "why"} and list(rec["mixture"]) == ["code", "prose", "arithmetic"]
    assert abs(sum(rec["mixture"].values()) - 1) < 1e-3 and rec["why"]
    assert "recommendation:" in capsys.readouterr().out and (out / "arena.md").is_file()
    # the snippet trains as it is, on top of the user's config
    keys = yaml.safe_load((out / "recommendation.yaml").read_text())
    mine = yaml.safe_load(config.read_text())
    run = load_config(raw={**mine, **keys, "output_dir": str(tmp_path / "train")})
    assert run.algorithm is not None
    # an interrupted or repeated arena reuses every finished run (same specs, same data)
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(command) == 0
    assert "best static mixture from the cached swarm" in caplog.text
    assert "arena: 12 of 12 runs reused from their saved results" in caplog.text  # 2 seeds × 6
    assert json.loads((out / "arena.json").read_text())["recommendation"] == rec


def test_arena_reports_every_mistake_before_training(tmp_path, demo_data, capsys):
    config = _config(tmp_path, demo_data)
    assert (
        main(
            [
                "arena",
                str(config),
                "--methods",
                "odmm,magic",
                "--clean",
                "code,poetry",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / "arena"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and "methods: unknown 'odmm'" in err[0] and "(did you mean 'odm'?)" in err[0]
    assert "methods: unknown 'magic'" in err[1] and "'poetry' is not a domain" in err[2]
    assert "seeds: expected an integer ≥ 2" in err[3]
    assert not (tmp_path / "arena").exists()


def test_default_methods_that_cannot_run_here_are_left_out_and_said(tmp_path, demo_data, caplog):
    from mixflow.bench import user_arena

    run = load_config(_config(tmp_path, demo_data), check_outputs=False)
    sources, clean = user_arena._checked(run, None, None, seeds=2, steps=4, jobs=1, swarm=3)
    arena = user_arena._user_arena(run, sources, clean, tmp_path / "work", 4, 2, 1, 3, None, 20)
    with caplog.at_level("WARNING", logger="mixflow"):
        kept = user_arena.runnable_methods(arena)
    # 4 steps: the methods that first update at step 10 would train on their initial weights only
    assert "odm" in kept and "pike" not in kept and "fgls" not in kept
    assert "pike: warmup_step/update_step: pike's first update would be at step 10, after max_steps 4" in caplog.text
    assert "arena: left out, its defaults cannot run here" in caplog.text
