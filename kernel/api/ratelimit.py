"""Per-principal rate limits: token buckets for requests and for model tokens per minute.

Each bucket holds up to its per-minute limit and refills continuously at limit/60 per second.
A request takes one request token on arrival (``admit``); its prompt and generated tokens are
charged afterwards (``charge``), which may drive the token bucket negative, so the principal's
next request waits until it is back above zero.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError, RateLimited

# Tolerates float error in refills, so a client retrying exactly after retry_after gets in.
_EPSILON = 1e-9


@dataclass
class _Buckets:
    requests: float
    tokens: float
    updated: float


class RateLimiter:
    """Requests and tokens per minute for each principal id; a ``None`` limit is unlimited.

    Buckets idle longer than ``idle_after`` seconds are dropped once more than
    ``max_principals`` are held.
    """

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_principals: int = 10_000,
        idle_after: float = 600.0,
    ) -> None:
        for name, limit in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):
            if limit is not None and limit <= 0:
                raise ConfigError(f"{name} must be a positive number or unset, not {limit}")
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._clock = clock
        self._max_principals = max_principals
        self._idle_after = idle_after
        # Least recently used first, so idle buckets are found at the front.
        self._buckets: OrderedDict[str, _Buckets] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when any limit is set."""
        return self._rpm is not None or self._tpm is not None

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, principal_id: str) -> None:
        """Take one request token for ``principal_id``, or raise RateLimited."""
        if not self.enabled:
            return
        with self._lock:
            b = self._refilled(principal_id)
            if self._tpm is not None and b.tokens <= _EPSILON:
                # Strictly positive again only after the whole debt is repaid.
                wait = max(1, math.floor(-b.tokens * 60 / self._tpm) + 1)
                raise RateLimited(
                    f"token budget of {self._tpm} tokens/min exceeded for {principal_id}",
                    retry_after=wait,
                )
            if self._rpm is not None:
                if b.requests < 1 - _EPSILON:
                    wait = max(1, math.ceil((1 - b.requests) * 60 / self._rpm - _EPSILON))
                    raise RateLimited(
                        f"rate limit of {self._rpm} requests/min exceeded for {principal_id}",
                        retry_after=wait,
                    )
                b.requests -= 1

    def charge(self, principal_id: str, tokens: int) -> None:
        """Subtract ``tokens`` (prompt + generated) from the principal's token budget."""
        if self._tpm is None or tokens <= 0:
            return
        with self._lock:
            self._refilled(principal_id).tokens -= tokens

    def _refilled(self, principal_id: str) -> _Buckets:
        now = self._clock()
        b = self._buckets.get(principal_id)
        if b is None:
            b = _Buckets(float(self._rpm or 0), float(self._tpm or 0), now)
            self._buckets[principal_id] = b
            if len(self._buckets) > self._max_principals:
                self._drop_idle(now)
        else:
            self._buckets.move_to_end(principal_id)
            elapsed = max(0.0, now - b.updated)
            if self._rpm is not None:
                b.requests = min(float(self._rpm), b.requests + elapsed * self._rpm / 60)
            if self._tpm is not None:
                b.tokens = min(float(self._tpm), b.tokens + elapsed * self._tpm / 60)
            b.updated = now
        return b

    def _drop_idle(self, now: float) -> None:
        while self._buckets:
            oldest_id, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated <= self._idle_after:
                break
            del self._buckets[oldest_id]
