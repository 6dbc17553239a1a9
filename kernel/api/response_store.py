"""Stored answers of ``/v1/responses``, so that ``previous_response_id`` can continue them.

One row per response in ``<home>/responses.sqlite``: its owner (the caller's principal, so
one API key or user never sees another's), the response as it was answered, and the input
items that led to it (the whole conversation, so a chain survives the deletion of any
response in it). A row lives ``responses_ttl`` seconds; past ``responses_max`` rows or
``responses_max_bytes`` of JSON the oldest go first. The file is opened on first use.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .usage import connect

log = logging.getLogger(__name__)
FILE = "responses.sqlite"  # in the engine's home

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, owner TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL, size INTEGER NOT NULL,
    response TEXT NOT NULL, input TEXT NOT NULL
)
"""
# Past either bound, the oldest rows go: the newest are counted (and summed) first.
_EVICT = """
DELETE FROM responses WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, ROW_NUMBER() OVER w AS n, SUM(size) OVER w AS total FROM responses
        WINDOW w AS (ORDER BY seq DESC)
    ) WHERE n > ? OR total > ?
)
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored response and the input items (the conversation) it answered."""

    response: dict[str, Any]
    input: list[dict[str, Any]]


class ResponseStore:
    """Responses by (owner, id) in SQLite. Another owner's id reads as an unknown one."""

    def __init__(
        self,
        path: Path,
        ttl: float,
        max_count: int,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.ttl, self.max_count, self.max_bytes = path, ttl, max_count, max_bytes
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:  # under the lock
        if self._db is None:
            self._db, _ = connect(self.path, _SCHEMA)
            self._db.execute("CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)")
        return self._db

    def put(self, owner: str, response: dict[str, Any], input: list[dict[str, Any]]) -> None:
        """Keep ``response`` (its ``id`` is the key) and the input it answered."""
        body, items = json.dumps(response), json.dumps(input)
        size, now = len(body.encode()) + len(items.encode()), self._clock()
        if size > self.max_bytes:  # kept, it would push every other response out
            log.warning(
                "response %s (%d bytes) is larger than responses_max_bytes: not kept",
                response["id"],
                size,
            )
            return
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM responses WHERE expires <= ?", (now,))
                db.execute(
                    "INSERT OR REPLACE INTO responses "
                    "(id, owner, created, expires, size, response, input) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (response["id"], owner, now, now + self.ttl, size, body, items),
                )
                db.execute(_EVICT, (self.max_count, self.max_bytes))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def get(self, owner: str, id: str) -> Stored | None:
        """The response ``id`` of ``owner``; None when unknown, expired or another's."""
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT response, input FROM responses "
                    "WHERE id = ? AND owner = ? AND expires > ?",
                    (id, owner, self._clock()),
                )
                .fetchone()
            )
        return None if row is None else Stored(json.loads(row[0]), json.loads(row[1]))

    def delete(self, owner: str, id: str) -> bool:
        """Remove the response ``id`` of ``owner``; False when there was none to remove."""
        with self._lock:
            cursor = self._conn().execute(
                "DELETE FROM responses WHERE id = ? AND owner = ? AND expires > ?",
                (id, owner, self._clock()),
            )
        return cursor.rowcount > 0

    def count(self) -> int:
        """The rows kept, expired ones included until the next write sweeps them."""
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
