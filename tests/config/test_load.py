import json
import random

import pytest
import torch
import yaml

from mixflow.cli.main import main
from mixflow.config import ConfigError, load_config, parse_overrides


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in ("wiki", "code"):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps({"text": f"{name} {i}"}) for i in range(5)) + "\n")
    (d / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.jsonl"} for n in ("wiki", "code")}))
    return d


@pytest.fixture
def base(tmp_path, data_dir):
    return {
        "dataset": "wiki,code",
        "dataset_dir": str(data_dir),
        "model_config": {"model_type": "llama", "hidden_size": 16},
        "output_dir": str(tmp_path / "out"),
        "train_type": "dynamic_mix",
        "component_name": "static",
        "init_mixture_proportions": [0.5, 0.5],
    }


def write(tmp_path, cfg, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_valid_config_routes_keys(tmp_path, base):
    run = load_config(write(tmp_path, {**base, "learning_rate": 1e-3, "update_step": 7}))
    assert run.data.dataset == ["wiki", "code"]
    assert run.mixing.update_step == 7
    assert run.training["learning_rate"] == 1e-3
    assert run.training["report_to"] == "none"  # our default


def test_overrides_apply_and_parse_yaml_values(tmp_path, base):
    run = load_config(write(tmp_path, base), parse_overrides(["update_step=3", "init_mixture_proportions=[0.2,0.8]"]))
    assert run.mixing.update_step == 3 and run.mixing.init_mixture_proportions == [0.2, 0.8]


def test_run_level_proportions_win_over_the_components_file_with_a_notice(tmp_path, base, caplog):
    comp = tmp_path / "components.yaml"
    comp.write_text(yaml.safe_dump({"mixers": {"static": {"name": "static", "params": {"proportions": [0.5, 0.5]}}}}))
    with caplog.at_level("WARNING", logger="mixflow"):
        run = load_config(
            write(tmp_path, {**base, "components_cfg_file": str(comp), "init_mixture_proportions": [0.3, 0.7]})
        )
    assert run.algorithm.params.proportions is None  # the static algorithm starts from init_mixture_proportions
    assert run.mixing.init_mixture_proportions == [0.3, 0.7]
    assert "init_mixture_proportions [0.3, 0.7] overrides static.params.proportions [0.5, 0.5]" in caplog.text


def test_llama_factory_keys_are_mapped_accepted_or_refused(tmp_path, base, caplog):
    with caplog.at_level("WARNING", logger="mixflow"):
        run = load_config(
            write(
                tmp_path,
                {
                    **base,
                    "warmup_ratio": 0.1,
                    "stage": "pt",
                    "template": "default",
                    "finetuning_type": "full",
                    "plot_loss": True,
                },
            )
        )
    assert run.training["warmup_steps"] == 0.1  # TrainingArguments reads a float below 1 as a ratio
    assert "plot_loss, template accepted without effect here" in caplog.text
    assert run.data.stage == "pt"  # ours: checked against the domains
    for extra, message in (
        ({"finetuning_type": "qlora"}, r"^finetuning_type: expected 'full' or 'lora', got 'qlora'"),
        ({"stage": "sft"}, r"^stage: sft trains on instruction data, but domain 'wiki' is plain text"),
        ({"stage": "rm"}, r"^stage: "),
        ({"warmup_ratio": 0.1, "warmup_steps": 5}, r"^warmup_ratio: give warmup_ratio or warmup_steps"),
        ({"warmup_ratio": 2}, r"^warmup_ratio: expected a number in \[0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, {**base, **extra}))
    # a LoRA config of LLaMA-Factory: its LoRA keys are ours; a variant mixflow does not build and a
    # missing file are refused in one attempt, with no "did you mean" of another meaning
    from mixflow.config.errors import ConfigErrors

    lora = {**base, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all"}
    assert load_config(write(tmp_path, lora)).model.lora_rank == 8
    with pytest.raises(ConfigErrors) as err:
        load_config(write(tmp_path, {**lora, "use_dora": True, "lora_dropout": 2, "deepspeed": "ds_z3.json"}))
    assert [m.split(":")[0] for m in err.value.messages] == ["use_dora", "deepspeed", "lora_dropout"]
    assert "local_rank" not in "\n".join(err.value.messages)


def test_tokenization_cache_keys_are_ours_now(tmp_path, base, caplog):
    with caplog.at_level("WARNING", logger="mixflow"):
        run = load_config(
            write(
                tmp_path,
                {
                    **base,
                    "overwrite_cache": True,
                    "preprocessing_num_workers": 4,
                    "tokenized_dir": str(tmp_path / "tok"),
                },
            )
        )
    assert run.data.overwrite_cache is True and run.data.preprocessing_num_workers == 4
    assert run.data.tokenized_dir == str(tmp_path / "tok")
    assert "accepted without effect" not in caplog.text
    with pytest.raises(ConfigError, match=r"^preprocessing_num_workers: expected a positive integer, got 0"):
        load_config(write(tmp_path, {**base, "preprocessing_num_workers": 0}))


def test_values_are_yaml_1_2_scalars_in_files_and_overrides(tmp_path, base):
    # YAML 1.1 would read `no` as false and `1e-4` as a string: neither is what a user typed
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base) + "learning_rate: 1e-4\nsave_strategy: no\n")
    run = load_config(path)
    assert run.training["learning_rate"] == 1e-4 and run.training["save_strategy"] == "no"
    run = load_config(
        write(tmp_path, base), parse_overrides(["save_strategy=no", "learning_rate=2e-4", "run_name=1:30"])
    )
    assert run.training["save_strategy"] == "no" and run.training["learning_rate"] == 2e-4
    assert run.training["run_name"] == "1:30"
    assert parse_overrides(["a=true", "b=off", "c=10", "d=.5"]) == {"a": True, "b": "off", "c": 10, "d": 0.5}


def test_components_file_and_inline_component(tmp_path, base):
    comp = tmp_path / "components.yaml"
    comp.write_text(yaml.safe_dump({"mixers": {"static": {"name": "static", "params": {"proportions": [0.5, 0.5]}}}}))
    run = load_config(write(tmp_path, {**base, "components_cfg_file": str(comp)}))
    assert run.mixing.components_cfg_file == str(comp)
    run = load_config(write(tmp_path, {**base, "component": {"name": "static", "params": {}}}))
    assert run.mixing.component.name == "static"


BAD = [
    ({"learning_rat": 0.1}, r"learning_rat: unknown key \(did you mean 'learning_rate'\?\)"),
    ({"cutoff_len": "long"}, r"cutoff_len: expected an integer"),
    (
        {"init_mixture_proportions": [0.2, 0.3, 0.5]},
        r"init_mixture_proportions: expected 2 values \(one per domain\), got 3",
    ),
    ({"init_mixture_proportions": [1.2, -0.2]}, r"init_mixture_proportions: expected non-negative weights"),
    ({"train_type": "dynamic"}, r"train_type: expected one of"),
    ({"output_dir": None}, r"output_dir: required"),
    ({"model_name_or_path": "/nonexistent/model"}, r"model_name_or_path: expected exactly one"),
    ({"dataset": "wiki,cod"}, r"dataset: .*cod.*did you mean 'code'"),
    ({"update_step": 0}, r"update_step: expected an integer >= 1"),
    ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size: expected an integer >= 1"),
    (
        {"component_name": "doremix", "components_cfg_file": "COMP"},
        r"component_name: 'doremix' is not in the 'mixers' section",
    ),
    (
        {"component": {"name": "static", "params": {"proportion": [1, 1]}}},
        r"static.params.proportion: unknown parameter.*did you mean 'proportions'",
    ),
    ({"components_cfg_file": "/nonexistent/components.yaml"}, r"components_cfg_file: file not found"),
    ({"static_mix": "yes"}, r"static_mix: expected true or false"),
    ({"mixture_sample_rule": "stratified"}, r"init_mixture_proportions: only used with mixture_sample_rule 'mixture'"),
    (
        {"model_config": {"model_type": "lama"}},
        r"model_config.model_type: unknown model type 'lama' \(did you mean 'llama'\?\)",
    ),
    ({"learning_rate": -1.0}, r"learning_rate: expected a number >= 0"),
    ({"val_size": 1.5}, r"val_size: expected a fraction"),
    (
        {"train_type": "static", "component_name": "doremii"},
        r"component_name: 'doremii' is ignored with train_type static",
    ),
    ({"max_epochs": [1.0]}, r"max_epochs: expected 2 values \(one per domain: wiki, code\), got 1"),
    ({"max_epochs": {"wik": 2}}, r"max_epochs.wik: not a domain of this run \(wiki, code\)"),
    ({"max_epochs": 0}, r"max_epochs: expected a finite number > 0, got 0"),
    ({"unimax_max_epochs": 0}, r"unimax_max_epochs: expected a number > 0, got 0"),
    (
        {
            "component": {
                "name": "schedule",
                "params": {"stages": [{"at": 0, "proportions": [1, 1]}, {"at": 5, "algorithm": {"name": "fgls"}}]},
            }
        },
        r"stages\[1\].algorithm.name: expected an algorithm whose sampling is the objective",
    ),
]


def test_a_schedule_of_fixed_stages_needs_no_update_before_max_steps(tmp_path, base):
    stages = [{"at": 0, "proportions": [1, 1]}, {"at": 5, "proportions": [1, 3]}]
    cfg = {
        **base,
        "component": {"name": "schedule", "params": {"stages": stages}},
        "update_step": 1000,
        "max_steps": 10,
    }
    cfg.pop("init_mixture_proportions")
    assert load_config(write(tmp_path, cfg)).algorithm.name == "schedule"
    stages[1] = {"at": 5, "algorithm": {"name": "odm"}}  # an algorithm stage updates: its first update must come
    with pytest.raises(ConfigError, match="schedule's first update would be at step 1000, after max_steps 10"):
        load_config(write(tmp_path, cfg))


@pytest.mark.parametrize("change,message", BAD, ids=[next(iter(c)) for c, _ in BAD])
def test_bad_config_fails_with_one_line_naming_the_key(tmp_path, base, change, message):
    comp = tmp_path / "components.yaml"
    comp.write_text(yaml.safe_dump({"mixers": {"static": {"name": "static"}}}))
    cfg = {**base, **change}
    if cfg.get("components_cfg_file") == "COMP":
        cfg["components_cfg_file"] = str(comp)
    cfg = {k: v for k, v in cfg.items() if not (k == "output_dir" and v is None)}
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, cfg))
    assert "\n" not in str(info.value)


def test_missing_dataset_file_is_named(tmp_path, base, data_dir):
    (data_dir / "code.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"dataset: .*code"):
        load_config(write(tmp_path, base))


def test_missing_inline_domain_file(tmp_path, base):
    cfg = {k: v for k, v in base.items() if k not in ("dataset", "dataset_dir")}
    cfg["domains"] = [{"name": "a", "path": str(tmp_path / "missing.jsonl")}, {"name": "b", "path": str(tmp_path)}]
    with pytest.raises(ConfigError, match=r"domains\[0\].path: domain .a.: path .*missing.jsonl not found"):
        load_config(write(tmp_path, cfg))


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["update_step"])


def test_cli_prints_one_line_and_exits_2_before_loading_anything(tmp_path, base, capsys, monkeypatch):
    import mixflow.recipes.train

    def boom(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("data or model was loaded despite a config error")

    monkeypatch.setattr(mixflow.recipes.train, "prepare_data", boom)
    monkeypatch.setattr(mixflow.recipes.train, "build_model", boom)
    code = main(["train", str(write(tmp_path, {**base, "warmup_stepz": 3}))])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("mixflow: error: warmup_stepz: unknown key")
    assert "did you mean 'warmup_step'" in err


def test_every_config_error_is_reported_at_once(tmp_path, base, capsys):
    cfg = {
        **base,
        "stage_two": 1,
        "learnin_rate": 1e-3,
        "warmup_stepz": 3,
        "update_step": "often",
        "model_config": {"model_type": "lama"},
    }
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    messages = err.value.messages
    assert any(m.startswith("stage_two: unknown key") for m in messages)
    assert any(m.startswith("learnin_rate: unknown key") and "learning_rate" in m for m in messages)
    assert any(m.startswith("warmup_stepz: unknown key") for m in messages)
    assert any(m.startswith("update_step: expected an integer") for m in messages)
    assert len(messages) == 4  # the typed sections failed: checks that read them wait for a fix
    assert main(["train", str(write(tmp_path, cfg))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("mixflow: error: ") for line in lines)
    # once the sections are typed, the independent checks all run: the data, the model, the training keys
    cfg = {**base, "dataset": "wiki,nope", "model_config": {"model_type": "lama"}, "save_strategy": "sometimes"}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    text = str(err.value)
    assert "nope" in text and "model_config.model_type: unknown model type 'lama'" in text
    assert "save_strategy: sometimes is not a valid SaveStrategy" in text
    assert len(err.value.messages) == 3


def test_a_component_name_typo_is_reported_with_the_data_and_training_errors(tmp_path, base):
    # K and B are unknown while the data or training keys are wrong: the name and the params checks
    # that need neither still run, so one attempt names every problem
    cfg = {**base, "dataset": "wiki,nope", "learning_rate": -1.0, "component": {"name": "odmm"}}
    cfg.pop("component_name")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    messages = err.value.messages
    assert any("nope" in m for m in messages)
    assert any(m.startswith("learning_rate: expected a number >= 0") for m in messages)
    assert any(m.startswith("component.name: unknown algorithm 'odmm'") and "did you mean 'odm'" in m for m in messages)
    cfg["component"] = {"name": "odm", "params": {"etaa": 0.1}}
    with pytest.raises(ConfigError, match=r"odm.params.etaa: unknown parameter"):
        load_config(write(tmp_path, cfg))
    # a domain whose file is missing still leaves K known: a check that needs K runs too
    cfg["component"] = {"name": "static", "params": {"proportions": [1, 2, 3]}}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    assert any(m.startswith("static.params.proportions: expected 2 values") for m in err.value.messages)
    comp = write(tmp_path, {"mixers": {"mine": {"name": "odmm"}}}, "components.yaml")
    cfg = {**base, "learning_rate": -1.0, "components_cfg_file": str(comp), "component_name": "mine"}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, cfg))
    assert any(m.startswith("mixers.mine.name: unknown algorithm 'odmm'") for m in err.value.messages)


def test_train_from_scratch_starts_from_the_directory_config_with_fresh_weights(tmp_path, base):
    import torch

    from mixflow.recipes.build import build_model
    from tests.helpers import tiny_llama

    saved = tiny_llama(seed=5, vocab=259)  # the byte tokenizer's ids fit
    saved.save_pretrained(tmp_path / "pretrained")
    cfg = {k: v for k, v in base.items() if k != "model_config"}
    run = load_config(
        write(
            tmp_path,
            {
                **cfg,
                "model_name_or_path": str(tmp_path / "pretrained"),
                "train_from_scratch": True,
                "tokenizer": "byte",
                "cutoff_len": 32,
            },
        )
    )
    fresh = build_model(run, tokenizer=None)
    assert fresh.config.hidden_size == saved.config.hidden_size and fresh.config.num_hidden_layers == 2
    weight = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(fresh.state_dict()[weight], saved.state_dict()[weight])
    run.model.train_from_scratch = False
    loaded = build_model(run, tokenizer=None)
    assert torch.equal(loaded.state_dict()[weight], saved.state_dict()[weight])
    with pytest.raises(ConfigError, match="^train_from_scratch: expected model_name_or_path"):
        load_config(write(tmp_path, {**base, "train_from_scratch": True}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the Trainer's FSDP is refused only without CUDA")
def test_sharded_engines_the_trainer_cannot_run_here_are_one_line_each(tmp_path, base):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {**base, "fsdp": "full_shard", "deepspeed": "ds.json"}))
    assert sorted(m.split(":")[0] for m in err.value.messages) == ["deepspeed", "fsdp"]
    assert "would train plain DDP" in str(err.value)
    load_config(write(tmp_path, {**base, "fsdp": ""}))  # off, as the Trainer reads it


def test_inline_domains_read_columns_like_dataset_info_entries(tmp_path, base, data_dir):
    from mixflow.recipes.inputs import domain_sources

    inline = {k: v for k, v in base.items() if k not in ("dataset", "dataset_dir")}
    wiki = str(data_dir / "wiki.jsonl")
    run = load_config(
        write(
            tmp_path,
            {
                **inline,
                "domains": [
                    {"name": "a", "path": wiki, "columns": {"prompt": "body"}},
                    {"name": "b", "path": wiki, "columns": {"prompt": "q", "response": "r"}},
                ],
            },
        )
    )
    a, b = domain_sources(run)
    assert (a.text_field, a.formatting) == ("body", None)  # columns.prompt, as in dataset_info.json
    assert b.formatting is not None and b.formatting.kind == "alpaca"
    for domain, message in (
        ({"columns": {"prompt": "q", "answer": "r"}}, r"^domains\[0\]: columns\.answer: a text entry"),
        (
            {"columns": {"prompt": "q", "response": "r"}, "text_field": "t"},
            r"^domains\[0\]: text_field: an instruction entry",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(write(tmp_path, {**inline, "domains": [{"name": "a", "path": wiki, **domain}]}))
    with pytest.raises(
        ConfigError, match=r"^task: classification reads a text and a label per example, but domain 'b'"
    ):
        load_config(
            write(
                tmp_path,
                {
                    **inline,
                    "task": "classification",
                    "domains": [{"name": "b", "path": wiki, "columns": {"prompt": "q", "response": "r"}}],
                },
            )
        )


def test_a_model_that_cannot_take_the_data_is_refused_from_its_config(tmp_path, base):
    from mixflow.config.errors import ConfigErrors
    from mixflow.data.bpe import train_bpe

    model = tmp_path / "gpt2"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 1000, "n_positions": 128}))
    rng = random.Random(0)  # enough distinct words for 1200 tokens
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
    tokenizer = train_bpe([" ".join(words[i : i + 200]) for i in range(0, 4000, 20)], tmp_path / "tok", 1200)
    cfg = {k: v for k, v in base.items() if k != "model_config"}
    cfg.update(model_name_or_path=str(model), cutoff_len=256)
    with pytest.raises(ConfigErrors) as err:  # no tokenizer in the model directory, and too long rows
        load_config(write(tmp_path, cfg))
    messages = err.value.messages
    assert any(m.startswith(f"tokenizer: {model} has no tokenizer files") for m in messages)
    assert "cutoff_len: 256 is longer than the model's n_positions 128; expected at most 128" in messages
    cfg.update(tokenizer=str(tokenizer), cutoff_len=128)
    with pytest.raises(ConfigError, match="its vocabulary has 1200 tokens, more than the model's vocab_size 1000"):
        load_config(write(tmp_path, cfg))
    rope = {
        **base,
        "model_config": {"model_type": "llama", "hidden_size": 16, "max_position_embeddings": 256},
        "cutoff_len": 512,
    }
    with pytest.raises(ConfigError, match="cutoff_len: 512 is longer than the model's max_position_embeddings 256"):
        load_config(write(tmp_path, rope))
    shapes = {**base, "model_config": {"model_type": "llama", "hidden_size": -32, "num_hidden_layers": 1}}
    with pytest.raises(ConfigError, match="model_config.hidden_size: expected a positive integer, got -32"):
        load_config(write(tmp_path, shapes))
    shapes["model_config"] = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 5}
    with pytest.raises(ConfigError, match="model_config.num_attention_heads: 5 does not divide hidden_size 32"):
        load_config(write(tmp_path, shapes))
    cfg.update(tokenizer="byte")  # 259 ids fit
    assert load_config(write(tmp_path, cfg)).data.tokenizer == "byte"


def test_every_error_of_every_layer_at_once_and_nothing_silently_accepted(tmp_path, base):
    from mixflow.config.errors import ConfigErrors

    bad = {
        **base,
        "learning_rat": 1e-3,
        "per_device_train_batch_size": "big",
        "max_steps": -5,
        "save_steps": 0,
        "init_mixture_proportions": [0.5, 0.3, 0.2],
    }
    with pytest.raises(ConfigErrors) as err:
        load_config(write(tmp_path, bad))
    text = "\n".join(err.value.messages)
    # an unknown key no longer hides the type errors and the cross-field checks
    for expected in (
        "learning_rat: unknown key",
        "per_device_train_batch_size: expected",
        "max_steps: expected a positive",
        "save_steps: expected a number of steps > 0",
    ):
        assert expected in text, expected
    assert "invalid literal" not in text
    # each layer's checks report all their problems, not the first
    layered = {
        **base,
        "cutoff_len": 0,
        "val_size": -1,
        "max_samples": 0,
        "mixture_sample_rule": "temperature",
        "mixture_temperature": -1,
        "update_step": 0,
        "model_config": {"model_type": "lama"},
        "tokenizer": str(tmp_path / "no-tokenizer"),
    }
    with pytest.raises(ConfigErrors) as err:
        load_config(write(tmp_path, layered))
    keys = [m.split(":")[0] for m in err.value.messages]
    for key in (
        "cutoff_len",
        "val_size",
        "max_samples",
        "mixture_temperature",
        "init_mixture_proportions",
        "update_step",
        "model_config.model_type",
        "tokenizer",
    ):
        assert key in keys, key
    # an adaptive algorithm that would never update
    odm = {**base, "component_name": None, "component": {"name": "odm"}, "max_steps": 10, "warmup_step": 20}
    odm.pop("component_name")
    with pytest.raises(ConfigError, match="first update would be at step 20, after max_steps 10"):
        load_config(write(tmp_path, odm))
    with pytest.raises(ConfigError, match="update_times: 0 means odm never updates"):
        load_config(write(tmp_path, {**odm, "warmup_step": 0, "update_step": 1, "update_times": 0}))
    # a weight that is not a number, at load (not after the data is read)
    nan = tmp_path / "nan.yaml"
    nan.write_text(
        yaml.safe_dump({**base, "train_type": "static", "mixture_sample_rule": "mixture"}).replace(
            "init_mixture_proportions:\n- 0.5\n- 0.5", "init_mixture_proportions: [.nan, 0.5]"
        )
    )
    with pytest.raises(ConfigError, match=r"init_mixture_proportions: expected finite weights"):
        load_config(nan)
    # a key given twice in the file
    path = tmp_path / "twice.yaml"
    path.write_text(yaml.safe_dump(base) + "learning_rate: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(ConfigError, match=r"learning_rate: given twice \(lines \d+ and \d+\)"):
        load_config(path)
