"""Configuration: typed dataclasses (``schema``) and validated loading from YAML (``load``)."""

from mixflow.config.errors import ConfigError
from mixflow.config.load import load_config
from mixflow.config.parse import parse_overrides
from mixflow.config.schema import (
    ComponentConfig,
    DataConfig,
    DomainConfig,
    MixingConfig,
    ModelConfig,
    ResolvedComponent,
    RunConfig,
)

__all__ = [
    "ComponentConfig",
    "ConfigError",
    "DataConfig",
    "DomainConfig",
    "MixingConfig",
    "ModelConfig",
    "ResolvedComponent",
    "RunConfig",
    "load_config",
    "parse_overrides",
]
