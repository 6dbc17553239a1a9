"""What each hub user used, by day and model, kept across restarts in ``<home>/usage.sqlite``;
and the per-user quotas that read it (requests per minute, tokens per day, streams at once).

Tokens count the whole prompt (a cached prefix too) and the answer, as rate limits do.
"""

from __future__ import annotations

import datetime
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..access import Access, current_access
from ..config import HubQuotas
from ..errors import RateLimited
from ..hooks import InferenceEvent
from .ratelimit import RateLimiter

audit = logging.getLogger("ferrousforge.audit")
LEDGER = "usage.sqlite"  # in the engine's home: usage and personal keys

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, user TEXT NOT NULL, model TEXT NOT NULL,
    requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, user, model)
)
"""


def connect(path: Path, schema: str) -> tuple[sqlite3.Connection, threading.Lock]:
    """A connection to the SQLite file at ``path`` with ``schema`` made, used from any
    thread under the lock that comes with it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(schema)
    return db, threading.Lock()


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


class Usage:
    """Requests and tokens per (UTC day, user, model) in SQLite. Writes are a few rows per
    request, made on the event loop under a lock (WAL keeps readers off the writer)."""

    def __init__(self, path: Path) -> None:
        self._db, self._lock = connect(path, _SCHEMA)

    def add(self, user: str, model: str, prompt: int, completion: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (day, user, model) DO "
                "UPDATE SET requests = requests + 1, prompt_tokens = prompt_tokens + ?, "
                "completion_tokens = completion_tokens + ?",
                (_today(), user, model, prompt, completion, prompt, completion),
            )

    def tokens_today(self, user: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage "
                "WHERE day = ? AND user = ?",
                (_today(), user),
            ).fetchone()
        return int(row[0])

    def report(self, user: str | None = None) -> list[dict[str, Any]]:
        """Totals by user and model (one user's, or everyone's), with today's tokens."""
        where, args = ("WHERE user = ?", (_today(), user)) if user else ("", (_today(),))
        with self._lock:
            rows = self._db.execute(
                "SELECT user, model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
                "SUM(CASE WHEN day = ? THEN prompt_tokens + completion_tokens ELSE 0 END) "
                f"FROM usage {where} GROUP BY user, model ORDER BY user, model",
                args,
            ).fetchall()
        keys = ("user", "model", "requests", "prompt_tokens", "completion_tokens", "tokens_today")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Quotas:
    """Per-user quotas for hub users (admins are exempt), and the hooks that count usage and
    write one audit line per request."""

    def __init__(self, quotas: HubQuotas, usage: Usage, groups: Iterable[str] = ()) -> None:
        self.quotas, self.usage = quotas, usage
        self._per_minute = RateLimiter(quotas.requests_per_minute, None)
        self._running: Counter[str] = Counter()  # inferences in flight, by user
        # Totals for /metrics by configured group ("" for users in none of them): the
        # labels stay bounded whatever groups the hub has; users are never labels.
        self._groups = frozenset(groups)
        self.requests_by: Counter[tuple[str, str]] = Counter()  # (group, model)
        self.tokens_by: Counter[tuple[str, str]] = Counter()

    def admit(self, access: Access) -> None:
        """Raise RateLimited (429) naming the quota a request would break."""
        if access.admin:
            return
        user, q = access.user, self.quotas
        if q.concurrent_streams is not None and self._running[user] >= q.concurrent_streams:
            raise RateLimited(
                f"{user} already runs {self._running[user]} requests at once "
                f"(hub.quotas.concurrent_streams = {q.concurrent_streams})",
                retry_after=1,
            )
        if q.tokens_per_day is not None and self.usage.tokens_today(user) >= q.tokens_per_day:
            now = datetime.datetime.now(datetime.UTC)
            midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0)
            raise RateLimited(
                f"{user} used the daily quota of {q.tokens_per_day} tokens "
                "(hub.quotas.tokens_per_day); it renews at midnight UTC",
                retry_after=(midnight - now).total_seconds(),
                should_retry=False,
            )
        self._per_minute.admit(user)  # its message names requests_per_minute

    # -- hooks -----------------------------------------------------------------------

    def on_inference_start(self, e: InferenceEvent) -> None:
        if e.client.startswith("hub:"):
            self._running[e.client[4:]] += 1

    def on_inference_end(self, e: InferenceEvent) -> None:
        if not e.client.startswith("hub:"):
            return
        user = e.client[4:]
        self._running[user] -= 1
        if self._running[user] <= 0:
            del self._running[user]
        s = e.stats
        prompt = s.prompt_eval_count + s.prompt_cached if s is not None else 0
        completion = s.eval_count if s is not None else 0
        self.usage.add(user, e.model, prompt, completion)
        for group in sorted(current_access.get().groups & self._groups) or [""]:
            self.requests_by[group, e.model] += 1
            self.tokens_by[group, e.model] += prompt + completion
        audit.info(
            "user=%s model=%s task=%s prompt_tokens=%d completion_tokens=%d outcome=%s",
            user,
            e.model,
            e.task,
            prompt,
            completion,
            e.error or "ok",
        )


def group_metrics(quotas: Quotas) -> Any:
    """A Prometheus collector of the hub's totals by group and model."""
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    class ByGroup(Collector):
        def collect(self) -> Iterator[Any]:
            requests = CounterMetricFamily(
                "forge_hub_requests", "hub users' inferences", labels=["group", "model"]
            )
            tokens = CounterMetricFamily(
                "forge_hub_tokens", "hub users' prompt and answer tokens", labels=["group", "model"]
            )
            for (group, model), n in sorted(quotas.requests_by.items()):
                requests.add_metric([group, model], n)
            for (group, model), n in sorted(quotas.tokens_by.items()):
                tokens.add_metric([group, model], n)
            yield from (requests, tokens)

    return ByGroup()
