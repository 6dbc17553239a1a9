"""Stop sequences across token boundaries."""

from __future__ import annotations

import pytest

from ferrousforge.backends.stops import StopMatcher


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = "".join(m.feed(p) for p in pieces) + m.flush()
    return out, m.stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        (["END"], ["hello ", "E", "N", "D", " more"], ("hello ", True)),
        (["END"], ["hello E", "NX"], ("hello ENX", False)),
        (["\n\n", "User:"], ["a\n", "\nb"], ("a", True)),
        (["User:"], ["Us", "er", ":", "x"], ("", True)),
        ([], ["a", "b"], ("ab", False)),
        (["abc"], ["xxab"], ("xxab", False)),  # held back, then released at the end
        (["ab", "b"], ["xb"], ("x", True)),  # the earliest match wins
    ],
)
def test_stops(stops: list[str], pieces: list[str], expected: tuple[str, bool]) -> None:
    assert run(stops, pieces) == expected


def test_text_is_released_as_soon_as_it_cannot_be_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("hello S") == "hello "
    assert m.feed("x") == "Sx"
