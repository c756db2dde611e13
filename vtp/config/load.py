"""Reading `params.yaml`: base <- configs[name] <- `--set` overrides, validated, with one-line errors."""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vtp.config.base import ConfigError
from vtp.config.root import Config

DEFAULT_PARAMS = Path("params.yaml")


def _format(err: ValidationError, name: str) -> str:
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if msg.startswith("__field__"):  # raised by base.fail: names the field relative to the failing section
        field, rest = msg[len("__field__"):].split("__", 1)
        return f"config {name!r}: {'.'.join([*map(str, e['loc']), field])}{rest}"
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent = _section_at(e["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"config {name!r}: {loc}: unknown key; allowed keys: {allowed}"
    return f"config {name!r}: {loc} = {e.get('input')!r}: {msg}"


def _section_at(loc: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] = Config
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


@functools.lru_cache(maxsize=8)
def _read_params(path: str, mtime: float) -> dict:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameters file not found (run from the repository root or pass --params)")
    try:
        return copy.deepcopy(_read_params(str(path), path.stat().st_mtime))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None


def config_names(path: str | Path = DEFAULT_PARAMS) -> list[str]:
    return list((read_params(path).get("configs") or {}).keys())


def load_config(name: str | None = None, overrides: tuple[str, ...] | list[str] = (),
                params: str | Path = DEFAULT_PARAMS) -> Config:
    raw = read_params(params)
    configs = raw.pop("configs", None) or {}
    if name is not None and name != "base":
        if name not in configs:
            raise ConfigError(f"--config {name!r}: unknown configuration; choose from: "
                              f"{', '.join(['base', *configs])}")
        if not isinstance(configs[name], dict):
            raise ConfigError(f"configs.{name}: must be a mapping of overrides")
        raw = deep_merge(raw, configs[name])
    raw["name"] = name or raw.get("name", "base")
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    cfg = _validated(raw, steps_pending=bool((raw.get("train") or {}).get("equal_compute_with")))
    return _equal_compute(cfg, raw, configs, overrides, params) if cfg.train.equal_compute_with else cfg


def _equal_compute(cfg: Config, raw: dict, configs: dict, overrides, params) -> Config:
    """Derive `train.steps` from `train.equal_compute_with`: the named configuration as params.yaml defines it
    (this configuration's --set overrides do not apply to it). `--set train.steps=N` overrides the derivation."""
    from vtp.train.compute import equal_compute_steps  # measures on the meta device: torch-heavy, so lazy

    ref_name, name = cfg.train.equal_compute_with, cfg.name
    if any(o.split("=", 1)[0].strip() == "train.steps" for o in overrides):  # an explicit --set wins, and the
        return _validated(deep_merge(raw, {"train": {"equal_compute_with": None}}))  # record claims no equality
    if "steps" in ((configs.get(name) or {}).get("train") or {}):
        raise ConfigError(f"config {name!r}: train.steps and train.equal_compute_with are both set; the steps are "
                          f"derived from the equal-compute reference, so set only one")
    if ref_name not in configs:
        raise ConfigError(f"config {name!r}: train.equal_compute_with = {ref_name!r}: unknown configuration; "
                          f"choose from: {', '.join(c for c in configs if c != name)}")
    chained = ((configs.get(ref_name) or {}).get("train") or {}).get("equal_compute_with")
    if chained or ref_name == name:
        raise ConfigError(f"config {name!r}: train.equal_compute_with = {ref_name!r}, which itself derives its steps "
                          f"from {chained or ref_name!r}; point at a configuration with fixed steps")
    reference = load_config(ref_name, (), params)
    return _validated(deep_merge(raw, {"train": {"steps": equal_compute_steps(cfg, reference)}}))


def _validated(raw: dict, steps_pending: bool = False) -> Config:
    try:
        return Config.model_validate(raw, context={"steps_pending": steps_pending})
    except ValidationError as e:
        raise ConfigError(_format(e, raw["name"])) from None
