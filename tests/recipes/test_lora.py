"""finetuning_type: lora — LoRA adapters through peft, for every algorithm family, with exact resume."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from mixflow.cli.main import main
from tests.cli.test_cli import _config, demo_data  # noqa: F401  (fixture)
from tests.helpers import TINY_MODEL

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny pretrained-model directory (the byte tokenizer's 259 ids), as a user's base model."""
    torch.manual_seed(0)
    config = {k: v for k, v in TINY_MODEL.items() if k != "model_type"}
    model = LlamaForCausalLM(LlamaConfig(**config, vocab_size=259, pad_token_id=256, eos_token_id=258))
    out = tmp_path_factory.mktemp("base") / "model"
    model.save_pretrained(out)
    return out


def _lora(tmp_path, demo_data, base_model, **extra):  # noqa: F811
    cfg = yaml.safe_load(_config(tmp_path, demo_data).read_text())
    cfg.pop("model_config")
    cfg.update(model_name_or_path=str(base_model), tokenizer="byte", finetuning_type="lora", lora_rank=4, **extra)
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _adapter(run):
    return load_file(str(run / "adapter_model.safetensors"))


def test_lora_trains_only_the_adapter_and_a_resume_continues_it_exactly(tmp_path, demo_data, base_model):  # noqa: F811
    cfg = _lora(tmp_path, demo_data, base_model, train_type="dynamic_mix", component={"name": "odm"}, update_step=1)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "run"
    assert (run / "adapter_config.json").is_file() and not (run / "model.safetensors").exists()
    whole, log = _adapter(run), (run / "odm_weights.jsonl").read_text()
    assert whole and all("lora_" in name for name in whole)
    assert any(bool(t.abs().sum() > 0) for n, t in whole.items() if "lora_B" in n)  # B moved off zero
    assert main(["train", str(cfg), f"resume_from_checkpoint={run / 'checkpoint-3'}", "--quiet"]) == 0
    resumed = _adapter(run)
    assert all(torch.equal(whole[n], resumed[n]) for n in whole)
    strip = [{k: v for k, v in json.loads(x).items() if k != "timestamp"} for x in log.splitlines()]
    again = [
        {k: v for k, v in json.loads(x).items() if k != "timestamp"}
        for x in (run / "odm_weights.jsonl").read_text().splitlines()
    ]
    assert again == strip


def test_grad_stats_names_a_frozen_head_and_reads_adapter_gradients(tmp_path, demo_data, base_model, capsys):  # noqa: F811
    pike = {"train_type": "dynamic_mix", "update_step": 2, "per_device_train_batch_size": 8}
    cfg = _lora(tmp_path, demo_data, base_model, component={"name": "pike"}, **pike)
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "grad_params: the output head is frozen (finetuning_type: lora" in capsys.readouterr().err
    adapters = {"name": "pike", "params": {"grad_params": ["*lora_B*"]}}
    cfg = _lora(tmp_path, demo_data, base_model, component=adapters, overwrite_output_dir=True, **pike)
    assert main(["train", str(cfg), "--quiet"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "pike_weights.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["sampling_weights"] != lines[0]["sampling_weights"]


def test_the_head_trained_beside_the_adapters_keeps_grad_stats_closed_form(tmp_path, demo_data, base_model, caplog):  # noqa: F811
    pike = {
        "train_type": "dynamic_mix",
        "update_step": 2,
        "component": {"name": "pike"},
        "per_device_train_batch_size": 8,
    }
    cfg = _lora(tmp_path, demo_data, base_model, additional_target="lm_head", **pike)
    with caplog.at_level("INFO", logger="mixflow"):
        assert main(["train", str(cfg), "--quiet"]) == 0
    assert any("lm_head" in name for name in _adapter(tmp_path / "run"))
    assert "grad_stats: the output head's gradients in closed form" in caplog.text  # peft's trained copy


@pytest.mark.parametrize("adapter_reference", [False, True])
def test_doremi_reference_is_the_base_model_or_an_adapter_of_it(tmp_path, demo_data, base_model, adapter_reference):  # noqa: F811
    reference = base_model
    if adapter_reference:  # a reference trained with LoRA on the same base
        ref_dir = tmp_path / "ref"
        ref_dir.mkdir()
        assert main(["train", str(_lora(ref_dir, demo_data, base_model)), "--quiet"]) == 0
        reference = ref_dir / "run"
    doremi = {"name": "doremi", "params": {"reference_model_path": str(reference)}}
    cfg = _lora(tmp_path, demo_data, base_model, train_type="dynamic_mix", component=doremi, update_step=1)
    assert main(["train", str(cfg), "--quiet"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "doremi_weights.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(abs(sum(line["domain_weights"]) - 1) < 1e-9 for line in lines)
    assert lines[-1]["domain_weights"] != [0.25] * 4


@pytest.mark.parametrize(
    "family",
    [
        {"train_type": "dynamic_mix", "component": {"name": "fgls"}, "update_step": 3},  # held-out statistics
        {"train_type": "dynamic_weight", "component": {"name": "loss"}},  # a sample weighter
    ],
    ids=["fgls", "loss-weighter"],
)
def test_held_out_and_sample_weighting_families_train_adapters(tmp_path, demo_data, base_model, family):  # noqa: F811
    assert main(["train", str(_lora(tmp_path, demo_data, base_model, **family)), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "mixflow_results.json").read_text())
    assert results["steps"] == 6 and all(v == v for v in results["val_loss"].values())


def test_lora_keys_are_checked_at_load_all_at_once(tmp_path, demo_data, base_model, capsys):  # noqa: F811
    cfg = yaml.safe_load(_lora(tmp_path, demo_data, base_model).read_text())
    bad = {**cfg, "lora_rank": 0, "lora_dropout": 1.5, "lora_alpha": -2}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["train", str(tmp_path / "bad.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "lora_rank: expected an integer >= 1" in err
        and "lora_alpha: expected an integer > 0 (null: 2 × lora_rank)" in err
    )
    assert "lora_dropout: expected a number in [0, 1)" in err
    full = {**cfg, "finetuning_type": "full", "lora_rank": 16, "additional_target": "lm_head"}
    (tmp_path / "full.yaml").write_text(yaml.safe_dump(full))
    assert main(["train", str(tmp_path / "full.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "lora_rank: a LoRA key, but finetuning_type is full" in err and "additional_target: a LoRA key" in err
    (tmp_path / "dora.yaml").write_text(yaml.safe_dump({**cfg, "use_dora": True}))
    assert main(["train", str(tmp_path / "dora.yaml"), "--quiet"]) == 2
    assert "use_dora: an adapter variant of LLaMA-Factory that mixflow does not build" in capsys.readouterr().err
