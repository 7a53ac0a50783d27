"""End-to-end: `mixflow data demo`, `mixflow train` on a tiny model, `mixflow plot`, `mixflow list`."""

import json
import logging

import pytest
import yaml

from mixflow.cli.main import main
from mixflow.config.errors import ConfigError
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    assert main(["data", "demo", str(out), "--max-bytes", "30000", "--quiet"]) == 0
    return out


def _config(tmp_path, demo_data, **extra):
    cfg = {
        "dataset": "code,prose,arithmetic,random",
        "dataset_dir": str(demo_data),
        "cutoff_len": 32,
        "val_size": 4,
        "train_type": "static",
        "mixture_sample_rule": "mixture",
        "init_mixture_proportions": [0.4, 0.3, 0.2, 0.1],
        "update_step": 2,
        "model_config": TINY_MODEL,
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_steps": 6,
        "logging_steps": 2,
        "save_steps": 3,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "disable_tqdm": True,
        **extra,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_then_plot(tmp_path, demo_data, capsys, caplog):
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(_config(tmp_path, demo_data)), "--quiet"]) == 0
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    assert "world size 1, per-device batch 4, gradient accumulation 2: global batch 8; 6 steps" in summary
    assert "algorithm static (objective mode)" in summary and "update_step 2" in summary
    for domain in ("code", "prose", "arithmetic", "random"):
        assert f"  {domain} " in summary
    out = capsys.readouterr().out
    for name in ("code", "prose", "arithmetic", "random"):
        assert name in out  # the per-domain validation table
    run = tmp_path / "run"
    records = [json.loads(x) for x in (run / "static_weights.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert records[0]["domain_names"] == ["code", "prose", "arithmetic", "random"]
    assert records[0]["sampling_weights"] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    results = json.loads((run / "mixflow_results.json").read_text())
    assert set(results["val_loss"]) == {"code", "prose", "arithmetic", "random"}
    assert (run / "checkpoint-3" / "mixflow_state.json").is_file()
    assert (run / "mixflow_tokenizer.json").is_file() and (run / "config.json").is_file()

    from mixflow.cli.plot import _history_series

    series = _history_series(run, "mix/loss/")  # the plot's loss panel covers the whole run, not a checkpoint's prefix
    assert max(step for step, _ in series["code"]) == 6

    assert main(["plot", str(run)]) == 0
    png = run / "static_weights.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_through_the_cli_continues_the_log(tmp_path, demo_data):
    cfg = _config(tmp_path, demo_data)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "run"
    before = [json.loads(x)["step"] for x in (run / "static_weights.jsonl").read_text().splitlines()]
    assert main(["train", str(cfg), f"resume_from_checkpoint={run / 'checkpoint-3'}", "--quiet"]) == 0
    after = [json.loads(x)["step"] for x in (run / "static_weights.jsonl").read_text().splitlines()]
    assert before == after == [2, 4, 6]  # lines after step 3 were superseded, then written again
    moved = [json.loads(x)["step"] for x in (run / "static_weights.superseded.jsonl").read_text().splitlines()]
    assert moved == [4, 6]


SCHEDULE = {
    "name": "schedule",
    "params": {
        "interpolation": "linear",
        "stages": [
            {"at": 0, "proportions": [0.4, 0.3, 0.2, 0.1]},
            {"at": 2, "proportions": [0.1, 0.2, 0.3, 0.4]},
            {"at": 4, "algorithm": {"name": "odm"}},
            {"at": 6, "proportions": "learned"},
        ],
    },
}


def test_a_schedule_resumed_across_its_boundaries_trains_as_the_uninterrupted_run(tmp_path, demo_data, caplog):
    def weights(run):
        log = [json.loads(x) for x in (run / "schedule_weights.jsonl").read_text().splitlines()]
        return [(r["step"], r["from_step"], r["stage"], r["sampling_weights"]) for r in log]

    for d in "ab":
        (tmp_path / d).mkdir()
    whole = _config(tmp_path / "a", demo_data, train_type="dynamic_mix", component=SCHEDULE, update_step=1, max_steps=9)
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(whole), "--quiet"]) == 0
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    assert "stage 2 (steps 5–6): odm, from the p in force" in summary
    cut = _config(tmp_path / "b", demo_data, train_type="dynamic_mix", component=SCHEDULE, update_step=1, max_steps=9)
    assert main(["train", str(cut), "max_steps=9", "save_steps=3", "--quiet"]) == 0
    assert (
        main(["train", str(cut), f"resume_from_checkpoint={tmp_path / 'b' / 'run' / 'checkpoint-3'}", "--quiet"]) == 0
    )
    a, b = weights(tmp_path / "a" / "run"), weights(tmp_path / "b" / "run")
    assert a == b and [r[:3] for r in a][:3] == [(0, 2, 0), (1, 3, 1), (1, 3, 1)]  # planned lines included
    results = [json.loads((tmp_path / d / "run" / "mixflow_results.json").read_text()) for d in "ab"]
    assert results[0]["final_sampling_weights"] == results[1]["final_sampling_weights"]
    assert results[0]["val_loss"] == results[1]["val_loss"]  # the same model, bit for bit


def test_a_domain_at_max_epochs_leaves_the_mixture_said_once_and_in_the_results(tmp_path, demo_data, caplog, capsys):
    cfg = _config(tmp_path, demo_data, max_epochs={"random": 0.003}, max_steps=8)  # 2 rows of random's ~900
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg)]) == 0
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    step = results["left_the_mixture"]["random"]
    assert 1 <= step <= 8 and set(results["epochs"]) == {"code", "prose", "arithmetic", "random"}
    warnings = [r.getMessage() for r in caplog.records if "reached max_epochs" in r.getMessage()]
    assert len(warnings) == 1 and f"at step {step}" in warnings[0] and "2 rows" in warnings[0]
    assert "random" in capsys.readouterr().out.split("max_epochs reached at step")[0].splitlines()[-1]
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    assert "epochs over 8 steps at this p: code" in summary and "; max_epochs: random 0.00" in summary


def test_unimax_spreads_the_run_as_evenly_as_the_caps_allow(tmp_path, demo_data, caplog):
    cfg = _config(
        tmp_path, demo_data, mixture_sample_rule="unimax", unimax_max_epochs=0.001, init_mixture_proportions=None
    )
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "--quiet"]) == 0
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    from mixflow.data.proportions import unimax_proportions

    lines = summary.splitlines()
    rows = [int(x.split()[1]) for x in lines[2:6]]  # the train rows column of the four domains
    drawn = next(x for x in lines if "sampling weights at step 1" in x).split(": ", 1)[1].split(", ")
    expected = unimax_proportions(rows, 6 * 8, 0.001)  # max_steps × global batch rows, at most 0.001 epochs
    assert [float(x.split()[1]) for x in drawn] == pytest.approx(expected.tolist(), abs=6e-5)


def test_the_run_summary_says_what_the_run_uses_and_writes(tmp_path, demo_data, caplog):
    cfg = _config(tmp_path, demo_data, update_step=25, save_strategy="no")
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "--quiet"]) == 0
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    assert "proportions=None" not in summary and "=None" not in summary
    assert "tokenizer: byte (259 tokens)" in summary
    assert "sampling weights at step 1: code 0.4000, prose 0.3000, arithmetic 0.2000, random 0.1000" in summary
    assert "none before max_steps 6: the weights stay as above" in summary
    assert f"writes mixflow_results.json in {tmp_path / 'run'}" in summary
    assert not (tmp_path / "run" / "static_weights.jsonl").exists()
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_a_data_error_with_overwrite_output_dir_leaves_the_previous_run_in_place(tmp_path, demo_data, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    for name in ("one", "two"):
        lines = [json.dumps({"text": f"{name} document {i} " * 20}) for i in range(30)]
        if name == "two":
            lines.append(json.dumps({"txt": "a record without text"}))  # found while tokenizing
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (data / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.jsonl"} for n in ("one", "two")}))
    out = tmp_path / "run"
    out.mkdir()
    (out / "static_weights.jsonl").write_text('{"step": 25}\n')
    cfg = _config(tmp_path, data, dataset="one,two", init_mixture_proportions=[0.5, 0.5], overwrite_output_dir=True)
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "text" in capsys.readouterr().err
    assert (out / "static_weights.jsonl").read_text() == '{"step": 25}\n' and not (out / "previous-1").exists()


def test_an_accelerate_launch_that_started_one_of_several_processes_stops(tmp_path, demo_data, capsys, monkeypatch):
    # what `accelerate launch` with a MULTI_CPU config and num_processes: 2 leaves in the one process it starts
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", str(_config(tmp_path, demo_data)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "accelerate started one process" in err and "MULTI_GPU" in err
    assert not (tmp_path / "run").exists()


def test_quiet_silences_progress_everywhere_and_logs_get_lines_not_bars(tmp_path, demo_data, caplog, capsys):
    cfg = _config(tmp_path, demo_data, disable_tqdm=False, tokenized_dir=str(tmp_path / "tok"))
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "output_dir=" + str(tmp_path / "loud")]) == 0
    assert "train: 6/6 steps (100%)" in caplog.text  # stderr is not a terminal here: lines, not bars
    assert "it/s]" not in capsys.readouterr().err
    caplog.clear()
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "output_dir=" + str(tmp_path / "quiet"), "--quiet"]) == 0
    assert not [r for r in caplog.records if r.name.startswith("mixflow.progress")]
    assert "run summary:" in caplog.text  # what the run does is still said
    # the command's levels are its own: the caller's logging is as it was (a later test's caplog sees progress)
    assert logging.getLogger("mixflow.progress").level == logging.NOTSET


def test_main_leaves_the_caller_s_logger_levels_as_they_were(capsys):
    logging.getLogger("mixflow").setLevel(logging.ERROR)
    try:
        assert main(["list"]) == 0
        assert logging.getLogger("mixflow").level == logging.ERROR
    finally:
        logging.getLogger("mixflow").setLevel(logging.NOTSET)


def test_the_weight_trajectory_does_not_depend_on_the_dataloader_workers(tmp_path, demo_data, capsys):
    cfg = _config(
        tmp_path,
        demo_data,
        component={"name": "odm"},
        train_type="dynamic_mix",
        update_step=1,
        mixture_plan_horizon=5,
        max_steps=8,
        save_strategy="no",
        tokenized_dir=str(tmp_path / "tok"),
    )
    raw = yaml.safe_load(cfg.read_text())
    raw.pop("component_name", None)
    cfg.write_text(yaml.safe_dump(raw))
    logs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        assert main(["train", str(cfg), f"output_dir={out}", f"dataloader_num_workers={workers}", "--quiet"]) == 0
        logs[workers] = [
            json.loads(x)["sampling_weights"] for x in (out / "odm_weights.jsonl").read_text().splitlines()
        ]
    assert len(logs[0]) == 8 and logs[0] == logs[2]  # the weights apply at batch s + 5 either way
    assert logs[0][-1] != logs[0][0]  # they did move
    # a horizon shorter than the workers' read-ahead is refused before anything runs
    assert (
        main(
            [
                "train",
                str(cfg),
                f"output_dir={tmp_path / 'short'}",
                "dataloader_num_workers=2",
                "mixture_plan_horizon=2",
                "--quiet",
            ]
        )
        == 2
    )
    assert "mixture_plan_horizon: 2 is shorter than the DataLoader's read-ahead of 5 batches" in capsys.readouterr().err


def test_packed_documents_can_attend_to_themselves_only(tmp_path, demo_data):
    cfg = _config(tmp_path, demo_data, packed_attention="document", save_strategy="no")
    assert main(["train", str(cfg), "--quiet"]) == 0
    plain = _config(tmp_path, demo_data, save_strategy="no", output_dir=str(tmp_path / "plain"))
    assert main(["train", str(plain), "--quiet"]) == 0
    losses = [
        json.loads((out / "mixflow_results.json").read_text())["val_loss"]
        for out in (tmp_path / "run", tmp_path / "plain")
    ]
    assert losses[0] != losses[1]  # the same batches, another attention: another model
    assert json.loads((tmp_path / "run" / "config.json").read_text())["use_cache"] is False


def test_a_held_out_split_too_small_for_a_variance_is_an_error(tmp_path, demo_data, capsys):
    cfg = _config(
        tmp_path,
        demo_data,
        component={"name": "erma"},
        train_type="dynamic_mix",
        val_size=1,
        tokenized_dir=str(tmp_path / "tok"),
    )
    raw = yaml.safe_load(cfg.read_text())
    raw.pop("component_name", None)
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "val_size: erma needs at least 2 held-out rows per domain" in err and "code (1)" in err


def test_resuming_a_finished_run_changes_nothing(tmp_path, demo_data, caplog):
    cfg = _config(tmp_path, demo_data)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "run"
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with caplog.at_level("WARNING", logger="mixflow"):
        for _ in range(2):  # each rerun used to add a step
            assert main(["train", str(cfg), "resume_from_checkpoint=true", "--quiet"]) == 0
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot
    assert "is at step 6 of max_steps 6: the run is already complete" in caplog.text


def test_resume_true_without_a_checkpoint_fails_at_load_and_auto_starts_fresh(tmp_path, demo_data, capsys):
    cfg = _config(tmp_path, demo_data)
    assert main(["train", str(cfg), "resume_from_checkpoint=true", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no complete checkpoint" in err and "resume_from_checkpoint: auto" in err
    assert not (tmp_path / "run").exists()  # nothing was loaded or written
    assert main(["train", str(cfg), f"resume_from_checkpoint={tmp_path / 'nowhere'}", "--quiet"]) == 2
    assert "is not a checkpoint directory" in capsys.readouterr().err
    (tmp_path / "run").mkdir()  # a first attempt killed before its first checkpoint left its log
    (tmp_path / "run" / "static_weights.jsonl").write_text('{"step": 2}\n')
    assert main(["train", str(cfg), "resume_from_checkpoint=auto", "--quiet"]) == 0  # fresh
    assert json.loads((tmp_path / "run" / "mixflow_results.json").read_text())["steps"] == 6
    assert (tmp_path / "run" / "previous-1" / "static_weights.jsonl").read_text() == '{"step": 2}\n'
    assert main(["train", str(cfg), "resume_from_checkpoint=auto", "max_steps=8", "--quiet"]) == 0  # resumes at 6
    assert json.loads((tmp_path / "run" / "mixflow_results.json").read_text())["steps"] == 8


def test_a_checkpoint_with_a_half_written_trainer_state_is_skipped(tmp_path, demo_data, caplog):
    cfg = _config(tmp_path, demo_data, max_steps=6)
    assert main(["train", str(cfg), "max_steps=5", "--quiet"]) == 0  # checkpoints 3 and 5
    run = tmp_path / "run"
    (run / "checkpoint-5" / "trainer_state.json").write_text("")  # a kill inside the Trainer's write
    with caplog.at_level("WARNING", logger="mixflow"):
        assert main(["train", str(cfg), "resume_from_checkpoint=true", "--quiet"]) == 0
    assert (
        "skipping" in caplog.text
        and "checkpoint-5" in caplog.text
        and "trainer_state.json does not parse" in caplog.text
    )
    assert json.loads((run / "mixflow_results.json").read_text())["steps"] == 6


def test_tensorboard_receives_per_domain_metrics(tmp_path, demo_data):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _config(tmp_path, demo_data, report_to="tensorboard", max_steps=2, save_strategy="no")
    assert main(["train", str(cfg), "--quiet"]) == 0
    event_files = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert event_files
    tags = set()
    for f in event_files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/mix/loss/code", "train/mix/weight/random"} <= tags


def test_list_shows_algorithms_with_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "static:" in out and "proportions" in out


def test_plot_of_a_directory_without_logs_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mixflow: error: run_dir: no *_weights.jsonl") and "\n" not in err


def test_plain_pytorch_example_trains_and_resumes(tmp_path, demo_data):
    module = _plain_example()
    common = [
        "--data-dir",
        str(demo_data),
        "--batch-size",
        "8",
        "--cutoff-len",
        "32",
        "--max-documents",
        "20",
        "--out",
        str(tmp_path / "plain"),
    ]
    engine = module.main(common + ["--steps", "10"])
    assert engine.last_step == 10
    resumed = module.main(common + ["--steps", "20", "--resume"])
    assert resumed.last_step == 20
    steps = [json.loads(x)["step"] for x in (tmp_path / "plain" / "static_weights.jsonl").read_text().splitlines()]
    assert steps == [10, 20]


def _plain_example():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "plain_example", Path(__file__).parents[2] / "examples" / "plain_pytorch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_on_two_ranks(rank, world, data, out):
    example = _plain_example()
    common = ["--data-dir", data, "--batch-size", "8", "--cutoff-len", "32", "--max-documents", "20", "--steps", "6"]
    example.main(common + ["--out", f"{out}/ddp"])
    example.main(common + ["--out", f"{out}/fsdp", "--fsdp"])
    example.main([*common[:-1], "0", "--out", f"{out}/untrained"])


@pytest.mark.distributed
def test_plain_pytorch_example_shards_with_fsdp_like_ddp(tmp_path, demo_data):
    import torch

    from mixflow.testing import run_distributed

    run_distributed(_example_on_two_ranks, str(demo_data), str(tmp_path))
    ddp, fsdp = (torch.load(tmp_path / m / "checkpoint" / "train.pt")["model"] for m in ("ddp", "fsdp"))
    assert ddp.keys() == fsdp.keys()  # a full (unsharded) state dict either way
    assert all(torch.allclose(ddp[k], fsdp[k], rtol=1e-4, atol=1e-5) for k in ddp)
    untrained = torch.load(tmp_path / "untrained" / "checkpoint" / "train.pt")["model"]
    assert not all(torch.allclose(ddp[k], untrained[k]) for k in ddp)  # six steps did train


def test_a_fresh_run_never_appends_to_an_old_runs_logs(tmp_path, demo_data, capsys):
    from mixflow.config.checks import previous_run_files

    out = tmp_path / "run"
    out.mkdir()
    (out / "static_weights.jsonl").write_text('{"step": 25}\n')
    (out / "checkpoint-25").mkdir()
    config = str(_config(tmp_path, demo_data, output_dir=str(out), max_steps=4, save_strategy="no"))
    assert main(["train", config, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"output_dir: {out} holds a previous run" in err
    assert main(["train", config, "overwrite_output_dir=true", "--quiet"]) == 0
    moved = out / "previous-1"
    assert (moved / "static_weights.jsonl").read_text() == '{"step": 25}\n' and (moved / "checkpoint-25").is_dir()
    steps = [json.loads(line)["step"] for line in (out / "static_weights.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # the new run's log alone, in order
    assert previous_run_files(out)  # the new run's own files


def test_plot_axes_say_what_they_show():
    from mixflow.cli.plot import scores_label, weight_range

    assert weight_range([{"domain_weights": [0.4994, 0.5006]}]) == (0.0, 1.0)
    assert weight_range([{"domain_weights": [0.2, 1.8]}]) == (0.0, 1.1 * 1.8)
    assert scores_label("doremi").startswith("excess loss") and scores_label("fgls").startswith("held-out loss")
    assert scores_label("no_such_algorithm") == "per-domain score"


def test_a_resume_that_cannot_proceed_stops_in_one_line_and_leaves_the_log_alone(tmp_path, demo_data, capsys):
    config = str(_config(tmp_path, demo_data, max_steps=6, save_steps=3))
    assert main(["train", config, "--quiet"]) == 0
    log = tmp_path / "run" / "static_weights.jsonl"
    before = log.read_text()
    capsys.readouterr()
    wider = {**TINY_MODEL, "hidden_size": 2 * TINY_MODEL["hidden_size"]}
    resume = "resume_from_checkpoint=" + str(tmp_path / "run" / "checkpoint-3")
    assert main(["train", config, resume, "model_config=" + json.dumps(wider), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "resume_from_checkpoint:" in err and "of shape" in err
    assert log.read_text() == before and not (tmp_path / "run" / "static_weights.superseded.jsonl").exists()
    deeper = {**TINY_MODEL, "num_hidden_layers": TINY_MODEL["num_hidden_layers"] + 1}
    assert main(["train", config, resume, "model_config=" + json.dumps(deeper), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another model than this run's" in err and "num_hidden_layers" in err
    assert main(["train", config, resume, "cutoff_len=16", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cutoff_len, val_size, max_samples or the data changed" in err
    assert log.read_text() == before


@pytest.mark.parametrize("logging_steps", [1, 2])
def test_train_loss_after_a_resume_is_the_whole_run(tmp_path, demo_data, logging_steps):
    cfg = _config(tmp_path, demo_data, logging_steps=logging_steps)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--quiet"]) == 0
    full = json.loads((run / "mixflow_results.json").read_text())
    assert main(["train", str(cfg), f"resume_from_checkpoint={run / 'checkpoint-3'}", "--quiet"]) == 0
    resumed = json.loads((run / "mixflow_results.json").read_text())
    assert resumed["resumed_from_step"] == 3 and "resumed_from_step" not in full
    # the Trainer's own figure covers steps 4-6 only; ours is the whole run's mean
    assert resumed["train_loss_resumed_part"] != pytest.approx(full["train_loss"], abs=1e-3)
    if logging_steps == 1:  # step 3 was logged: exact up to the logs' rounding
        assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-3)
        assert "train_loss_note" not in resumed
    else:
        assert "steps 3–3 were not logged" in resumed["train_loss_note"]
        assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=0.05)


def test_data_tokenize_builds_once_and_training_reuses_it(tmp_path, demo_data, capsys, caplog):
    cfg = _config(tmp_path, demo_data, tokenized_dir=str(tmp_path / "tok"))
    assert main(["data", "tokenize", str(cfg), "--quiet"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["domain", "documents", "tokens", "rows"]
    assert [line.split()[0] for line in table[1:]] == ["code", "prose", "arithmetic", "random"]
    assert all(line.split()[4] == "built" for line in table[1:])
    entries = sorted(p.name for p in (tmp_path / "tok").iterdir() if p.is_dir())
    assert len(entries) == 4
    caplog.clear()
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "--quiet"]) == 0
    assert caplog.text.count("reusing") == 4 and "documents," not in caplog.text
    assert sorted(p.name for p in (tmp_path / "tok").iterdir() if p.is_dir()) == entries
    capsys.readouterr()
    # val_size is not part of the fingerprint: a new split reuses the same entries
    assert main(["data", "tokenize", str(cfg), "val_size=0.2", "--quiet"]) == 0
    assert all(line.split()[4] == "reused" for line in capsys.readouterr().out.splitlines()[1:])
    assert main(["data", "tokenize", str(cfg), "--overwrite", "--quiet"]) == 0
    assert all(line.split()[4] == "built" for line in capsys.readouterr().out.splitlines()[1:])


def test_the_default_cache_lives_under_dataset_dir(tmp_path, demo_data, capsys):
    cfg = _config(tmp_path, demo_data)
    assert main(["data", "tokenize", str(cfg), "--quiet"]) == 0
    assert all(str(demo_data / "tokenized") in line for line in capsys.readouterr().out.splitlines()[1:])


def test_an_instruction_domain_trains_beside_a_text_domain(tmp_path, demo_data, capsys):
    sft = tmp_path / "alpaca.json"
    sft.write_text(
        json.dumps([{"instruction": f"add {i} and {i}", "input": "", "output": str(2 * i)} for i in range(40)]),
        encoding="utf-8",
    )
    cfg = _config(
        tmp_path,
        demo_data,
        dataset=None,
        dataset_dir=None,
        domains=[
            {"name": "code", "path": str(demo_data / "code.jsonl")},
            {
                "name": "sft",
                "path": str(sft),
                "columns": {"prompt": "instruction", "query": "input", "response": "output"},
            },
        ],
        init_mixture_proportions=[0.5, 0.5],
        tokenized_dir=str(tmp_path / "tok"),
    )
    raw = yaml.safe_load(cfg.read_text())
    raw = {k: v for k, v in raw.items() if v is not None}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    assert set(results["val_loss"]) == {"code", "sft"}
    # the instruction domain is one row per example (not packed) with its prompt masked
    from mixflow.config.load import load_config
    from mixflow.recipes.build import prepare_data

    data = prepare_data(load_config(cfg, check_outputs=False), progress=False)
    row = data.train.single_domain(1)[0]
    assert (row["labels"] == -100).sum() > 0 and row["labels"][-1] == 258  # the byte tokenizer's EOS
    # the preview shows the prompt as context and the response as the target, and the text's EOS marks
    capsys.readouterr()
    assert main(["data", "preview", str(cfg), "--domain", "sft", "-n", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("== sft: ") and "targets in ⟦…⟧" in shown.splitlines()[0]
    assert "User: add 0 and 0\nAssistant: ⟦0⟧⟪EOS⟫" in shown and "User: add 1 and 1\nAssistant: ⟦2⟧⟪EOS⟫" in shown
    assert main(["data", "preview", str(cfg), "--domain", "code", "-n", "1"]) == 0
    assert "every token is a target" in capsys.readouterr().out
    assert main(["data", "preview", str(cfg), "--domain", "poems"]) == 2
    assert "domain: unknown ['poems']" in capsys.readouterr().err
    # LLaMA-Factory's stage is checked against the domains: sft needs every domain to be instruction data
    with pytest.raises(ConfigError, match="stage: sft trains on instruction data, but domain 'code' is plain text"):
        load_config(cfg, {"stage": "sft"}, check_outputs=False)
    with pytest.raises(ConfigError, match="stage: pt trains on plain text, but domain 'sft' is instruction data"):
        load_config(cfg, {"stage": "pt"}, check_outputs=False)
    capsys.readouterr()
    bad = yaml.safe_load(cfg.read_text())
    bad["domains"][1]["columns"]["images"] = "img"
    cfg.write_text(yaml.safe_dump(bad))
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "domains[1]: columns.images: images are not supported by mixflow" in capsys.readouterr().err


def test_a_cutoff_len_longer_than_a_domain_names_the_key_and_every_domain(tmp_path, demo_data, capsys):
    cfg = _config(
        tmp_path, demo_data, cutoff_len=1_000_000, model_config={**TINY_MODEL, "max_position_embeddings": 1_000_000}
    )
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(
        "cutoff_len: domain" in line and "no row of cutoff_len 1000000" in line for line in err
    )


def test_a_user_error_is_one_line_and_a_defect_keeps_its_traceback(monkeypatch, capsys):
    from mixflow.cli import main as cli_main
    from mixflow.errors import DataError

    def user_mistake(args):
        raise DataError("corpus.jsonl:3: expected one JSON object per line")

    monkeypatch.setattr(cli_main, "_cmd_list", user_mistake)
    assert main(["list"]) == 2
    assert capsys.readouterr().err == "mixflow: error: corpus.jsonl:3: expected one JSON object per line\n"

    def defect(args):
        raise ValueError("an index went wrong inside mixflow")

    monkeypatch.setattr(cli_main, "_cmd_list", defect)
    with pytest.raises(ValueError, match="an index went wrong"):  # not turned into a line: the traceback stays
        main(["list"])


@pytest.mark.parametrize("name", ["schedule", "ado", "aioli"])
def test_the_examples_of_the_newer_components_load_and_train_a_few_steps(tmp_path, demo_data, name):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / f"{name}.yaml"
    overrides = [
        f"dataset_dir={demo_data}",
        f"output_dir={tmp_path / 'run'}",
        "cutoff_len=32",
        "save_steps=1000",
        f"model_config={json.dumps(TINY_MODEL)}",
        "per_device_train_batch_size=8",
        "val_size=4",
    ]
    if name == "aioli":  # 4 rounds of 8 steps, LearnParams 4 × 1 step
        overrides.append("component.params={round_steps: 8, sweeps: 1, sweep_steps: 1}")
    if name == "ado":
        overrides.append(
            "component.params={fit_every: 4, start_step: 4, ignore_steps: 0, block: 1, smooth_window: 5, eps_min: 0.5}"
        )
    assert main(["train", str(example), *overrides, "max_steps=12", "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    assert results["steps"] == 12 and set(results["epochs"]) == {"code", "prose", "arithmetic", "random"}
    log = [json.loads(x) for x in (tmp_path / "run" / f"{name}_weights.jsonl").read_text().splitlines()]
    assert any(r["sampling_weights"] != log[0]["sampling_weights"] for r in log)  # p moved during the run


def test_evaluation_sets_of_their_own_are_reported_beside_the_held_out_rows(tmp_path, demo_data, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(demo_data, data, ignore=shutil.ignore_patterns("tokenized"))
    (data / "wiki_eval.jsonl").write_text(
        "".join(json.dumps({"text": f"an evaluation document {i} " * 8}) + "\n" for i in range(12))
    )
    info = json.loads((data / "dataset_info.json").read_text())
    info["wiki_eval"] = {"file_name": "wiki_eval.jsonl"}
    (data / "dataset_info.json").write_text(json.dumps(info))
    cfg = _config(
        tmp_path,
        data,
        dataset="code,prose",
        init_mixture_proportions=[0.5, 0.5],
        eval_dataset="wiki_eval",
        max_steps=2,
        save_steps=100,
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    assert set(results["val_loss"]) == {"code", "prose", "wiki_eval"}  # the held-out rows and the set of its own
    from mixflow.config.load import load_config
    from mixflow.recipes.build import prepare_data

    prepared = prepare_data(load_config(cfg, check_outputs=False), progress=False)
    assert set(prepared.val) == {"code", "prose"}  # what FGLS, ERMA, VA and Aioli read: never an evaluation set
    assert set(prepared.evaluation) == {"code", "prose", "wiki_eval"} and len(prepared.evaluation["wiki_eval"]) > 0
    bad = _config(tmp_path, data, dataset="code,prose", init_mixture_proportions=[0.5, 0.5], eval_dataset="code,wiki")
    assert main(["train", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "eval_dataset: 'code' is a training domain" in err and "dataset 'wiki' not in" in err
