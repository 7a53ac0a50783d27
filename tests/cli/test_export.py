"""`mixflow export`: a run's learned weights as a Megatron blend, an OLMo-core mixture, mixflow YAML."""

import json

import numpy as np
import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.load import load_config
from mixflow.data.pretokenized import write_megatron
from mixflow.recipes.export import mean_weights, run_weights
from tests.cli.test_cli import _config, demo_data  # noqa: F401  (fixture)

NAMES = ["web", "code", "books"]


def _run(tmp_path, lines, steps=10, algorithm="odm", initial=(0.5, 0.3, 0.2), summary=None, domains=None):
    """A run folder as `mixflow train` leaves it: weights log, results, domains file, summary."""
    run = tmp_path / "run"
    run.mkdir()
    with open(run / f"{algorithm}_weights.jsonl", "w") as f:
        for step, from_step, w in lines:
            f.write(
                json.dumps({"step": step, "from_step": from_step, "domain_names": NAMES, "domain_weights": w}) + "\n"
            )
    (run / "mixflow_results.json").write_text(json.dumps({"steps": steps}))
    records = domains or [{"name": n, "paths": [f"/data/{n}.jsonl"], "format": "text"} for n in NAMES]
    (run / "mixflow_domains.json").write_text(json.dumps({"domains": records, "initial_weights": list(initial)}))
    if summary is not None:
        (run / f"{algorithm}_summary.json").write_text(json.dumps(summary))
    return run


LINES = [(2, 3, [0.2, 0.4, 0.4]), (6, 7, [0.1, 0.1, 0.8]), (10, 11, [0.6, 0.2, 0.2])]


def test_final_step_and_average_weights_of_a_run(tmp_path):
    run = _run(tmp_path, LINES)
    # final and --step: the weights decided last by that step; the average: of the weights in force
    assert run_weights(run).weights == dict(zip(NAMES, [0.6, 0.2, 0.2]))
    assert run_weights(run, step=1).weights == dict(zip(NAMES, [0.5, 0.3, 0.2]))  # the initial weights
    assert run_weights(run, step=2).weights == dict(zip(NAMES, [0.2, 0.4, 0.4]))
    assert run_weights(run, step=9).weights == dict(zip(NAMES, [0.1, 0.1, 0.8]))
    # steps 1–2 initial, 3–6 the first change, 7–10 the second
    expected = (2 * np.array([0.5, 0.3, 0.2]) + 4 * np.array([0.2, 0.4, 0.4]) + 4 * np.array([0.1, 0.1, 0.8])) / 10
    assert list(run_weights(run, average=True).weights.values()) == pytest.approx(expected.tolist(), abs=1e-12)


def test_the_average_of_doremi_is_its_own_alpha_bar(tmp_path):
    run = _run(tmp_path, LINES, algorithm="doremi", summary={"average": [0.3, 0.3, 0.4]})
    exported = run_weights(run, average=True)
    assert exported.weights == dict(zip(NAMES, [0.3, 0.3, 0.4])) and "ᾱ" in exported.origin


def test_mean_weights_says_whether_the_weights_moved():
    changes = [(1, np.array([0.5, 0.5])), (4, np.array([0.2, 0.8]))]
    assert mean_weights(changes, 1, 3)[1] is False and mean_weights(changes, 4, 9)[1] is False
    mean, moved = mean_weights(changes, 2, 5)
    assert moved and mean.tolist() == pytest.approx([0.35, 0.65])


def test_a_schedule_exports_its_stages_and_yaml_keeps_them_as_a_schedule(tmp_path):
    stages = {"stages": [{"from_step": 1, "proportions": [0.5, 0.3, 0.2]}, {"from_step": 5, "algorithm": "odm"}]}
    lines = [(0, 1, [0.5, 0.3, 0.2]), (4, 5, [0.2, 0.4, 0.4]), (6, 7, [0.2, 0.2, 0.6])]
    run = _run(tmp_path, lines, steps=8, algorithm="schedule", summary=stages)
    exported = run_weights(run)
    assert [(s.first_step, s.last_step, s.what, s.moved) for s in exported.stages] == [
        (1, 4, "proportions", False),
        (5, 8, "odm", True),
    ]
    assert list(exported.stages[1].weights.values()) == pytest.approx([0.2, 0.3, 0.5])
    out = tmp_path / "schedule.yaml"
    assert main(["export", str(run), "--to", "yaml", "--out", str(out)]) == 0
    keys = yaml.safe_load(out.read_text())
    assert keys["component"]["name"] == "schedule" and keys["dataset"] == "web,code,books"
    assert [s["at"] for s in keys["component"]["params"]["stages"]] == [0, 4]
    # with --step a single mixture, not the stages
    assert main(["export", str(run), "--to", "yaml", "--step", "8", "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["init_mixture_proportions"] == [0.2, 0.2, 0.6]


def test_megatron_blend_is_weight_prefix_pairs_split_over_a_domains_prefixes_by_tokens(tmp_path, capsys):
    small = write_megatron(tmp_path / "data" / "code_a", [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])  # 10 tokens
    large = write_megatron(tmp_path / "data" / "code_b", [list(range(30))])  # 30 tokens
    domains = [
        {"name": "web", "paths": [str(tmp_path / "web.jsonl")], "format": "text"},
        {"name": "code", "paths": [str(small), str(large)], "format": "megatron"},
        {"name": "books", "paths": [str(tmp_path / "books")], "format": "text"},
    ]
    run = _run(tmp_path, [(2, 3, [0.6, 0.4, 0.0])], steps=4, domains=domains)
    assert main(["export", str(run), "--to", "megatron", "--path", "web=/big/web_text_document"]) == 0
    blend = capsys.readouterr().out.split()
    pairs = list(zip(blend[::2], blend[1::2]))  # Megatron-LM's --data-path: weight prefix weight prefix ...
    assert [p for _, p in pairs] == ["/big/web_text_document", str(small), str(large)]  # books at 0 left out
    assert [float(w) for w, _ in pairs] == pytest.approx([0.6, 0.1, 0.3])


def test_a_domain_not_in_the_target_format_needs_its_path(tmp_path, capsys):
    run = _run(tmp_path, LINES)
    assert main(["export", str(run), "--to", "megatron"]) == 2
    err = capsys.readouterr().err
    assert "--path: domain 'web': the run read it as text data, not a Megatron prefix" in err
    assert all(f"--path: domain {d!r}" in err for d in NAMES)  # every domain at once, one line each
    assert main(["export", str(run), "--to", "olmo", "--path", "nope=/x", "--path", "bad"]) == 2
    assert "--path: expected DOMAIN=PATH[,PATH...], got 'bad'" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "olmo", "--path", "nope=/x"]) == 2
    assert "--path: no domain 'nope' in this run" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "yaml", "--step", "11"]) == 2
    assert "--step: expected a step from 1 to 10" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "yaml", "--step", "3", "--average"]) == 2


def test_olmo_mixture_is_a_source_list_of_raw_token_files_with_ratios_summing_to_one(tmp_path, capsys):
    raw = tmp_path / "web.bin"
    np.arange(20, dtype=np.uint16).tofile(raw)
    header = tmp_path / "books.npy"
    np.save(header, np.arange(20, dtype=np.uint16))
    domains = [
        {"name": "web", "paths": [str(raw)], "format": "numpy"},
        {"name": "code", "paths": [str(tmp_path / "cache" / "code-0123")], "format": "mixflow"},
        {"name": "books", "paths": [str(header)], "format": "numpy"},
    ]
    run = _run(tmp_path, [(2, 3, [0.2, 0.2, 0.4])], steps=4, domains=domains)
    assert main(["export", str(run), "--to", "olmo"]) == 2  # a .npy with a header is not a raw token file
    assert f"{header} is a .npy file with a header" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "olmo", "--path", "books=/raw/books.bin"]) == 0
    mixture = yaml.safe_load(capsys.readouterr().out)
    sources = mixture["sources"]  # OLMo-core's SourceMixtureList: source_name, target_ratio, paths
    assert [s["source_name"] for s in sources] == NAMES
    assert np.allclose(sum(s["target_ratio"] for s in sources), 1.0) and all(s["target_ratio"] > 0 for s in sources)
    assert [s["target_ratio"] for s in sources] == pytest.approx([0.25, 0.25, 0.5])
    assert [s["paths"] for s in sources] == [
        [str(raw)],
        [str(tmp_path / "cache" / "code-0123" / "tokens.bin")],
        ["/raw/books.bin"],
    ]


def test_a_trained_run_records_its_domains_and_its_export_is_a_config_mixflow_loads(tmp_path, demo_data):  # noqa: F811
    config = _config(tmp_path, demo_data, train_type="dynamic_mix", component={"name": "odm"}, update_step=1)
    assert main(["train", str(config), "--quiet"]) == 0
    run = tmp_path / "run"
    record = json.loads((run / "mixflow_domains.json").read_text())
    assert [d["name"] for d in record["domains"]] == ["code", "prose", "arithmetic", "random"]
    assert all(d["format"] == "text" and d["train_tokens"] > 0 for d in record["domains"])
    assert record["initial_weights"] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    out = tmp_path / "export.yaml"
    assert main(["export", str(run), "--to", "yaml", "--out", str(out)]) == 0
    exported = yaml.safe_load(out.read_text())
    final = json.loads((run / "mixflow_results.json").read_text())["final_sampling_weights"]
    assert exported["init_mixture_proportions"] == pytest.approx(list(final.values()))
    base = yaml.safe_load(config.read_text())
    for key in ("train_type", "component", "init_mixture_proportions", "update_step"):
        base.pop(key, None)
    merged = tmp_path / "next.yaml"
    merged.write_text(yaml.safe_dump({**base, **exported, "output_dir": str(tmp_path / "next")}))
    assert load_config(merged).mixing.init_mixture_proportions == pytest.approx(list(final.values()))
