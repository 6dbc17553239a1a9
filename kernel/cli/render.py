"""Terminal output for the CLI: tables, sizes, times and progress bars (on stderr)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from ..progress import Progress


def out(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return str(n)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def ago(iso: str) -> str:
    from datetime import datetime

    try:
        then = datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return iso
    secs = max(0, time.time() - then)
    for unit, width in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if secs >= width:
            return f"{int(secs // width)} {unit} ago"
    return "just now"


def until(seconds: float | None, in_use: int = 0) -> str:
    if in_use:
        return "in use"
    if seconds is None:
        return "forever"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes from now"
    return f"{max(0, seconds):.0f} seconds from now"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [headers, *rows]
    ]
    return "\n".join(lines)


class ProgressBars:
    """A ProgressCallback drawing one tqdm bar per status, like ``ollama pull``.

    Without a terminal (``bars=False``) it prints only each new status line.
    """

    def __init__(self, bars: bool | None = None) -> None:
        self.bars = sys.stderr.isatty() if bars is None else bars
        self._bar: tqdm[Any] | None = None
        self._status = ""

    def __call__(self, p: Progress) -> None:
        if p.status != self._status:
            self.close()
            self._status = p.status
            if p.total and self.bars:
                self._bar = tqdm(
                    total=p.total,
                    desc=p.status,
                    unit=p.unit,
                    unit_scale=p.unit == "B",
                    unit_divisor=1024,
                    file=sys.stderr,
                    leave=True,
                )
            else:
                err(p.status)
        if self._bar is not None and p.completed is not None:
            self._bar.update(p.completed - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
