"""Stop sequences on a token stream: emit text early, but never a stop string or its prefix."""

from __future__ import annotations


class StopMatcher:
    """Feed decoded pieces; get back what is safe to show, and whether a stop was hit.

    Text that could be the start of a stop sequence is held back until the next piece
    decides it, so a stop string never leaks into the output, even across tokens.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        self.hit: str | None = None  # the stop sequence that matched

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text = self._held + piece
        found = [(i, s) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            cut, self.hit = min(found)
            self.stopped, self._held = True, ""
            return text[:cut]
        keep = max((_overlap(text, s) for s in self.stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is still held back when the stream ends without a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
