"""Hub users' usage (SQLite, kept across restarts) and the quotas that read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferrousforge.access import Access
from ferrousforge.api.usage import Quotas, Usage
from ferrousforge.config import HubQuotas
from ferrousforge.errors import RateLimited
from ferrousforge.hooks import InferenceEvent
from ferrousforge.schema import Stats


def test_usage_survives_a_restart_and_reports_by_user(tmp_path: Path) -> None:
    usage = Usage(tmp_path / "usage.sqlite")
    usage.add("alice", "tiny:latest", 10, 5)
    usage.add("alice", "tiny:latest", 2, 1)
    usage.add("bob", "tiny:latest", 7, 7)
    usage.close()
    again = Usage(tmp_path / "usage.sqlite")
    assert again.tokens_today("alice") == 18 and again.tokens_today("carol") == 0
    [mine] = again.report("alice")
    assert mine == {
        "user": "alice",
        "model": "tiny:latest",
        "requests": 2,
        "prompt_tokens": 12,
        "completion_tokens": 6,
        "tokens_today": 18,
    }
    assert [r["user"] for r in again.report()] == ["alice", "bob"]
    again.close()


def test_streams_at_once_and_requests_per_minute(tmp_path: Path) -> None:
    usage = Usage(tmp_path / "usage.sqlite")
    quotas = Quotas(HubQuotas(concurrent_streams=1, requests_per_minute=3), usage)
    alice = Access("alice", admin=False, models=frozenset())
    start = InferenceEvent("tiny:latest", "generate", client="hub:alice")
    quotas.admit(alice)
    quotas.on_inference_start(start)
    with pytest.raises(RateLimited, match="concurrent_streams"):
        quotas.admit(alice)
    cached = Stats(prompt_eval_count=1, eval_count=4)
    cached.prompt_cached = 9  # reused, but charged
    quotas.on_inference_end(
        InferenceEvent("tiny:latest", "generate", client="hub:alice", stats=cached)
    )
    assert usage.tokens_today("alice") == 14
    quotas.admit(alice)
    quotas.admit(alice)
    with pytest.raises(RateLimited, match="requests/min"):
        quotas.admit(alice)
    quotas.admit(Access("carol", admin=True))  # admins are exempt
    usage.close()
