"""`mixflow checkers`: quality/diversity checkers, the per-example cache, its invalidation, and
end-to-end `mixflow train` classification runs with IMP and DIMP on a tiny model."""

import json
import logging
import shutil

import numpy as np
import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.load import load_config
from mixflow.data.classification_demo import build_classification_demo
from mixflow.recipes.checkers import run_checkers
from mixflow.recipes.classification import prepare_classification_data
from mixflow.recipes.weights_cache import read_weights_cache, verify_weights_cache

TOPICS = "products,movies,restaurants,travel"
TINY = {
    "model_type": "llama",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _config(data, out, **extra):
    cfg = {
        "task": "classification",
        "dataset": TOPICS,
        "dataset_dir": str(data),
        "cutoff_len": 64,
        "val_size": 2,
        "eval_data": [str(data / "test_restaurants.jsonl")],
        "real_data": str(data / "real.jsonl"),
        "train_type": "static",
        "mixture_sample_rule": "stratified",
        "model_config": TINY,
        "output_dir": str(out),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
        "seed": 0,
        **extra,
    }
    return cfg


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """Tiny demo data and one `mixflow checkers` run over it (shared by the tests below)."""
    root = tmp_path_factory.mktemp("checkers")
    data = root / "data"
    build_classification_demo(data, synthetic_per_topic=12, real_size=16, test_per_topic=4, seed=0)
    cfg = _config(data, root / "checkers")
    result = run_checkers(load_config(raw=cfg), progress=False)
    return root, data, cfg, result


def test_checkers_are_trained_and_cache_every_training_row(checked):
    root, data, cfg, result = checked
    assert result.trained == ["diversity", "quality"]
    assert result.cache_status == "computed: no cache yet"
    for d in (result.quality_dir, result.diversity_dir):
        assert (d / "config.json").is_file() and (d / "mixflow_checker.json").is_file()
    cache = read_weights_cache(result.cache_path)
    train = prepare_classification_data(load_config(raw=cfg), progress=False).train
    assert len(cache.quality) == len(cache.diversity) == len(train) == 4 * (12 - 2)
    assert cache.labels.tolist() == train.labels.tolist()
    assert cache.domain_names == TOPICS.split(",") and cache.domain_sizes == train.domain_sizes
    for probs in (cache.quality, cache.diversity):
        assert np.all((probs > 0) & (probs < 1))
    assert not np.allclose(cache.quality, cache.diversity)  # two different classifiers
    # a second call redoes nothing
    again = run_checkers(load_config(raw=cfg), progress=False)
    assert again.trained == [] and again.cache_status == "up to date"
    assert np.array_equal(read_weights_cache(result.cache_path).quality, cache.quality)


def test_cache_is_invalidated_when_the_data_or_a_checker_changes(checked, tmp_path, caplog):
    root, _, _, _ = checked
    # a copy of the data and of the checkers: fingerprints are of contents, so the copy is up to date
    data, out = tmp_path / "data", tmp_path / "checkers"
    shutil.copytree(root / "data", data)
    shutil.copytree(root / "checkers", out)
    cfg = _config(data, out)
    assert run_checkers(load_config(raw=cfg), progress=False).cache_status == "up to date"

    # the training data changes: one synthetic label edited
    path = data / "synthetic" / "movies.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["label"] = 1 - rows[0]["label"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    imp_cfg = {
        **cfg,
        "train_type": "dynamic_weight",
        "component": {"name": "imp", "params": {"weights_cache": str(out / "imp_cache.npz")}},
    }
    with pytest.raises(ValueError, match="imp.params.weights_cache: .* was computed for other training data"):
        verify_weights_cache(load_config(raw=imp_cfg))
    with caplog.at_level(logging.WARNING, logger="mixflow"):
        result = run_checkers(load_config(raw=cfg), progress=False)
    assert result.trained == ["diversity"]  # the quality checker's real set did not change
    assert result.cache_status == "recomputed: the training data changed since it was computed"
    assert "stale" in caplog.text
    verify_weights_cache(load_config(raw=imp_cfg))  # valid again

    # the checkers change: another learning rate retrains both, so the cache is recomputed
    before = read_weights_cache(out / "imp_cache.npz")
    result = run_checkers(load_config(raw={**cfg, "learning_rate": 5e-2}), progress=False)
    assert sorted(result.trained) == ["diversity", "quality"]
    assert result.cache_status == "recomputed: the checkers changed since it was computed"
    after = read_weights_cache(out / "imp_cache.npz")
    assert after.data_fingerprint == before.data_fingerprint
    assert after.checker_fingerprint != before.checker_fingerprint
    assert not np.allclose(after.quality, before.quality)


def test_checkers_need_a_classification_config_with_real_data(checked):
    _, data, cfg, _ = checked
    with pytest.raises(ValueError, match="real_data: required"):
        run_checkers(load_config(raw={k: v for k, v in cfg.items() if k != "real_data"}), progress=False)


@pytest.mark.parametrize("weighter", ["imp", "dimp"])
def test_mixflow_train_classification_with_imp_and_dimp(checked, tmp_path, capsys, weighter):
    root, data, cfg, result = checked
    train_cfg = {k: v for k, v in cfg.items() if k != "real_data"}
    train_cfg.update(
        train_type="dynamic_weight",
        component={"name": weighter, "params": {"weights_cache": str(result.cache_path)}},
        output_dir=str(tmp_path / weighter),
        gradient_accumulation_steps=2,
        max_steps=3,
    )
    assert main(["train", _write(tmp_path / "train.yaml", train_cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "test_restaurants" in out
    results = json.loads((tmp_path / weighter / "mixflow_results.json").read_text())
    assert results["steps"] == 3
    assert set(results["val_accuracy"]) == {*TOPICS.split(","), "test_restaurants"}
    assert all(0 <= a <= 1 for a in results["val_accuracy"].values())
    assert (tmp_path / weighter / "config.json").is_file()

    # a cache for other data stops the run before anything is tokenized, with one line
    other = dict(train_cfg, val_size=3, overwrite_output_dir=True)  # the stale cache is what is tested
    assert main(["train", _write(tmp_path / "other.yaml", other), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"mixflow: error: {weighter}.params.weights_cache:") and "other training data" in err[-1]


def test_mixflow_checkers_command_reports_the_cache(checked, capsys):
    root, data, cfg, result = checked
    assert main(["checkers", _write(root / "ck.yaml", cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"weights_cache: {result.cache_path} (up to date)" in out
    assert "mean_imp_weight" in out
