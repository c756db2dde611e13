"""What every configuration section shares: frozen pydantic models that forbid unknown keys, and the error
protocol (one line naming the field, the value and what is allowed)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts (CLI exit code 2)."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def fail(field: str, value: Any, allowed: str) -> None:
    """Raise from a validator: the loader turns this into `config NAME: <section>.<field> = value: allowed`."""
    raise ValueError(f"__field__{field}__ = {value!r}: {allowed}")
