"""Sizes, times and tables as people read them: the CLI and the notebook magics both print
them, so neither depends on the other."""

from __future__ import annotations

import time
from collections.abc import Sequence


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


def kv_cells(used: int, cached: int, total: int) -> str:
    """Used/total KV cells and those kept for cached prompts; "-" for a model without."""
    if not total:
        return "-"
    return f"{used}/{total}" + (f" (+{cached} cached)" if cached else "")


def slots(in_use: int, total: int) -> str:
    """Busy/total slots (requests waiting for one count as busy ones' company, not more)."""
    return f"{min(in_use, total)}/{total}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [headers, *rows]
    ]
    return "\n".join(lines)
