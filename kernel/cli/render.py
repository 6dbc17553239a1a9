"""Terminal output for the CLI: lines on stdout and stderr, and progress bars (on stderr)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from ..progress import Progress


def out(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


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
