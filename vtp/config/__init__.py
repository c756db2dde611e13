"""Typed, frozen configuration loaded from `params.yaml`, one module per section.

`params.yaml` holds a base configuration plus a `configs:` mapping of named scaling configurations, each a
partial override of the base. `load_config(name)` merges base <- configs[name] <- `--set` overrides and
validates everything before any work starts; every error is one line naming the field, the value and what
is allowed (`ConfigError`). Stages read only their own sections (`vtp.stages`).
"""
from vtp.config.base import ConfigError, Section
from vtp.config.data import AugConfig, DataConfig
from vtp.config.eval import EvalConfig
from vtp.config.gan import GanConfig
from vtp.config.generation import DiTConfig, JudgeConfig, LatentsConfig, SampleConfig
from vtp.config.load import DEFAULT_PARAMS, config_names, deep_merge, load_config, parse_override, read_params
from vtp.config.loss import DinoLossConfig, LossConfig
from vtp.config.model import DropPath, ModelConfig, resolve_spec
from vtp.config.root import Config, check_combinations, to_dict
from vtp.config.train import TrainConfig

__all__ = ["AugConfig", "Config", "ConfigError", "DEFAULT_PARAMS", "DataConfig", "DiTConfig", "DinoLossConfig",
           "DropPath", "EvalConfig", "GanConfig", "JudgeConfig", "LatentsConfig", "LossConfig", "ModelConfig",
           "SampleConfig", "Section", "TrainConfig", "check_combinations", "config_names", "deep_merge", "load_config",
           "parse_override", "read_params", "resolve_spec", "to_dict"]
