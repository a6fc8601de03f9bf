"""Helpers shared by the tests."""

from __future__ import annotations


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
