"""Configuration: typed dataclasses (``schema``) and validated loading from YAML (``load``)."""

from mixflow.config.load import ConfigError, load_config, parse_overrides
from mixflow.config.schema import ComponentConfig, DataConfig, DomainConfig, MixingConfig, ModelConfig, RunConfig

__all__ = [
    "ComponentConfig",
    "ConfigError",
    "DataConfig",
    "DomainConfig",
    "MixingConfig",
    "ModelConfig",
    "RunConfig",
    "load_config",
    "parse_overrides",
]
