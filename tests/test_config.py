"""Settings precedence (CLI > FORGE_* environment > TOML file > defaults) and durations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferrousforge.config import load_settings, parse_duration
from ferrousforge.errors import ConfigError


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("FORGE_HOME", "FORGE_KEEP_ALIVE", "FORGE_NUM_CTX", "FORGE_MAX_LOADED_MODELS"):
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "forge.toml"
    path.write_text('keep_alive = "10m"\nnum_ctx = 1024\nmax_loaded_models = 7\n')
    monkeypatch.setenv("FORGE_CONFIG", str(path))
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("FORGE_KEEP_ALIVE", raising=False)
    s = load_settings()
    assert s.keep_alive == 300 and s.num_parallel is None  # each backend's own default


def test_precedence(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert (s.keep_alive, s.num_ctx, s.max_loaded_models) == (600, 1024, 7)  # file
    monkeypatch.setenv("FORGE_NUM_CTX", "2048")
    monkeypatch.setenv("FORGE_KEEP_ALIVE", "1h")
    s = load_settings()
    assert (s.keep_alive, s.num_ctx, s.max_loaded_models) == (3600, 2048, 7)  # env > file
    s = load_settings(num_ctx=512, keep_alive=None)
    assert (s.keep_alive, s.num_ctx) == (3600, 512)  # CLI > env; unset flags don't count


def test_home_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    monkeypatch.setenv("FORGE_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text("num_parallel = 3\n")
    s = load_settings()
    assert s.num_parallel == 3 and s.home == tmp_path


def test_bad_values_are_one_line_errors(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_MAX_LOADED_MODELS", "0")
    with pytest.raises(ConfigError, match="max_loaded_models"):
        load_settings()
    toml.write_text("num_ctx = [broken\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("0", 0),
        ("-1", -1),
        ("-5m", -1),
        (42, 42),
        (None, None),
    ],
)
def test_durations(text: str | int | None, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5 minutes", "m5", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="bad duration"):
        parse_duration(text)
