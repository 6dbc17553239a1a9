"""Personal API keys for hub users: minted and revoked at ``/keys`` by a hub-authenticated
user, for tools outside the hub (any OpenAI or Ollama client, jupyter-ai, LangChain).

A key is shown once and stored as its SHA-256 in ``<home>/usage.sqlite``, with its owner's
name, groups and admin scope as they were when it was made (mint a new one after a change).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from ..access import Access, allowed_models
from .usage import connect

PREFIX = "ffk-"  # tells a personal key from a hub token at a glance

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, user TEXT NOT NULL,
    groups TEXT NOT NULL, admin INTEGER NOT NULL, models TEXT, name TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class Keys:
    """The keys table; every method is a few rows under a lock, on the event loop."""

    def __init__(self, path: Path) -> None:
        self._db, self._lock = connect(path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def mint(self, access: Access, name: str) -> dict[str, Any]:
        """A new key for ``access``'s user: the secret is in this answer only."""
        key = PREFIX + secrets.token_urlsafe(32)
        row = {"id": secrets.token_hex(6), "name": name, "created": time.time()}
        models = None if access.models is None else "\n".join(sorted(access.models))
        with self._lock:
            self._db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row["id"],
                    _digest(key),
                    access.user,
                    "\n".join(sorted(access.groups)),
                    int(access.admin),
                    models,
                    name,
                    row["created"],
                ),
            )
        return row | {"key": key}

    def list(self, user: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created FROM keys WHERE user = ? ORDER BY created", (user,)
            ).fetchall()
        return [{"id": i, "name": n, "created": c} for i, n, c in rows]

    def revoke(self, user: str, key_id: str) -> bool:
        with self._lock:
            gone = self._db.execute("DELETE FROM keys WHERE id = ? AND user = ?", (key_id, user))
        return gone.rowcount > 0

    def access(self, key: str) -> Access | None:
        """Whose ``key`` is, with the rights it was made with; None for no such key."""
        with self._lock:
            row = self._db.execute(
                "SELECT user, groups, admin, models FROM keys WHERE digest = ?", (_digest(key),)
            ).fetchone()
        if row is None:
            return None
        user, groups, admin, models = row
        allowed = None if models is None else allowed_models(filter(None, models.split("\n")))
        return Access(user, frozenset(filter(None, groups.split("\n"))), bool(admin), allowed)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
