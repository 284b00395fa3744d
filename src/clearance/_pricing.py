"""Pricing LLM calls with genai-prices (offline data shipped with the package).

An unknown model is recorded as unpriced (cost None), never as $0. Overrides, per model name,
take precedence over genai-prices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

import genai_prices
from pydantic import BaseModel, ConfigDict, Field

PRICE_DATA = f"genai-prices {genai_prices.__version__}"
_MTOK = Decimal(1_000_000)


class ModelPrice(BaseModel):
    """A price override for one model, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class Price:
    """The cost of one LLM call.

    Attributes:
        cost_usd: The cost, or None when the model is unknown (unpriced).
        source: Where the price came from (`genai-prices X.Y.Z` or `override`), or why unpriced.
        provider: The provider genai-prices matched, when it did.
    """

    cost_usd: Decimal | None
    source: str
    provider: str | None = None

    @property
    def nano_usd(self) -> int | None:
        """The cost in billionths of a dollar (exact, for sums), or None."""
        if self.cost_usd is None:
            return None
        return int((self.cost_usd * 10**9).to_integral_value(ROUND_HALF_EVEN))


def price(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    *,
    provider: str | None = None,
    overrides: Mapping[str, ModelPrice] | None = None,
) -> Price:
    """Price one call. `input_tokens` includes `cached_input_tokens`, as OpenAI reports them."""
    override = (overrides or {}).get(model)
    if override is not None:
        cached_rate = override.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = override.input_per_mtok
        cost = (
            Decimal(input_tokens - cached_input_tokens) * override.input_per_mtok
            + Decimal(cached_input_tokens) * cached_rate
            + Decimal(output_tokens) * override.output_per_mtok
        ) / _MTOK
        return Price(cost, "override", provider)
    usage = genai_prices.Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached_input_tokens or None,
    )
    try:
        calc = genai_prices.calc_price(usage, model, provider_id=provider)
    except LookupError as exc:
        return Price(None, f"unpriced: {exc}", provider)
    return Price(Decimal(calc.total_price), PRICE_DATA, calc.provider.id)
