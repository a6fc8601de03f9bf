"""What Claude costs: the price table, `Usage` (tokens and dollars), and the
accounting of one billed response.

Prices are $ per million tokens (input, output). Cache writes cost 1.25x input
(the 5-minute ephemeral cache), cache reads 0.1x input. Keys are model names
without a date suffix: "claude-sonnet-4-5-20250929" prices as "claude-sonnet-4-5".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any

log = logging.getLogger(__name__)

PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-0": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-3-haiku": (0.25, 1.25),
}
# An unknown model is priced at the most expensive rate in the table, so spend
# is never under-counted; a warning says so.
DEFAULT_PRICE_PER_MTOK: tuple[float, float] = (15.0, 75.0)
CACHE_WRITE_MULTIPLIER = 1.25
CACHE_READ_MULTIPLIER = 0.1

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass
class Usage:
    """Tokens and dollars spent: every billed response, rejected replies included."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0  # billed API responses (a failed attempt is not billed)

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def billed_tokens(self) -> int:
        """Every token the API billed: input, output, cache writes and cache reads."""
        return (self.input_tokens + self.output_tokens + self.cache_creation_input_tokens
                + self.cache_read_input_tokens)


def _base_model_name(model: str) -> str:
    """'claude-sonnet-4-5-20250929' -> 'claude-sonnet-4-5'; '...-latest' likewise."""
    return re.sub(r"-(\d{8}|latest)$", "", model)


def price_for(model: str, prices: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """($/Mtok input, $/Mtok output) for `model`, or None when it is not in the table."""
    table = {**PRICES_PER_MTOK, **(prices or {})}
    for key in (model, _base_model_name(model)):
        if key in table:
            inp, out = table[key]
            return float(inp), float(out)
    return None


def cost_usd(
    price: tuple[float, float],
    *,
    input_tokens: int,
    output_tokens: int,
    cache_creation_input_tokens: int = 0,
    cache_read_input_tokens: int = 0,
) -> float:
    p_in, p_out = price
    return (
        input_tokens * p_in
        + output_tokens * p_out
        + cache_creation_input_tokens * p_in * CACHE_WRITE_MULTIPLIER
        + cache_read_input_tokens * p_in * CACHE_READ_MULTIPLIER
    ) / 1_000_000


_warned: set[str] = set()


def usage_of(response: Any, model: str, prices: dict[str, tuple[float, float]] | None = None) -> Usage:
    """The `Usage` of one billed response (an `anthropic.types.Message`)."""
    u = getattr(response, "usage", None)
    counts = {name: int(getattr(u, name, 0) or 0) for name in _TOKEN_FIELDS}
    price = price_for(model, prices)
    if price is None:
        price = DEFAULT_PRICE_PER_MTOK
        if model not in _warned:  # once per process, not once per call
            _warned.add(model)
            log.warning("no price for model %r; counting it at $%g/$%g per million input/output tokens",
                        model, *price)
    return Usage(**counts, cost_usd=cost_usd(price, **counts), requests=1)
