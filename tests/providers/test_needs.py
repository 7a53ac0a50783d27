"""A provider declares what it needs from the run (held-out rows, a check before any model loads)
where it registers; the config checks and the run builder ask it, so a new provider edits nothing
in config/ or recipes/."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from mixflow.algorithms.base import DomainAlgorithm
from mixflow.algorithms.params import AlgorithmParams
from mixflow.algorithms.registry import register_algorithm
from mixflow.algorithms.weights import Weights
from mixflow.config.load import load_config
from mixflow.errors import ConfigError
from mixflow.providers.base import ProviderNeeds, StatisticProvider, provider_needs, register_provider
from mixflow.recipes.train import run_training

SEEN: list[str] = []


def _preflight(params, tokenizer):
    SEEN.append(type(tokenizer).__name__)
    if params.refuse:
        raise ConfigError("test_needy.params.refuse: the preflight ran before the model loaded")


@register_provider("test_needy_stat", ProviderNeeds(heldout_rows=3, preflight=_preflight))
def _build(params, context):
    return StatisticProvider()


@dataclass
class NeedyParams(AlgorithmParams):
    refuse: bool = False
    """whether the provider's preflight refuses the run"""


@register_algorithm
class Needy(DomainAlgorithm[NeedyParams]):
    name = "test_needy"
    description = "test only: reads the test_needy_stat provider"
    Params = NeedyParams
    providers = ("test_needy_stat",)

    def update(self, stats, step):
        return Weights()


@pytest.fixture
def config(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} text {i}"}) + "\n" for i in range(20)))
    (data / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.jsonl"} for n in "ab"}))
    return {
        "dataset": "a,b",
        "dataset_dir": str(data),
        "tokenizer": "byte",
        "cutoff_len": 16,
        "train_type": "dynamic_mix",
        "component": {"name": "test_needy"},
        "max_steps": 1,
        "update_step": 1,
        "model_config": {
            "model_type": "llama",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
        },
        "output_dir": str(tmp_path / "run"),
        "use_cpu": True,
        "report_to": "none",
    }


def test_the_config_asks_the_provider_for_a_held_out_split(config):
    assert provider_needs("test_needy_stat").heldout_rows == 3
    with pytest.raises(ConfigError, match="val_size: TEST_NEEDY needs a held-out split per domain"):
        load_config(raw=config)


def test_the_builder_asks_the_provider_how_many_rows_and_runs_its_preflight_before_the_model(config):
    with pytest.raises(ValueError, match=r"val_size: test_needy needs at least 3 held-out rows per domain"):
        run_training(load_config(raw={**config, "val_size": 2}), progress=False)
    SEEN.clear()
    run = load_config(raw={**config, "val_size": 3, "component": {"name": "test_needy", "params": {"refuse": True}}})
    with pytest.raises(ConfigError, match="preflight ran before the model loaded"):
        run_training(run, progress=False)
    assert SEEN == ["ByteTokenizer"]
