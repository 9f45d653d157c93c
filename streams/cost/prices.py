"""Price table: what one completion cost, from the token counts and the prices in force at its time.

The cost agent loads the price table (shipped ``streams/cost/prices.yaml``) once with :meth:`PriceTable.load` and calls
:meth:`PriceTable.price` per completion. Money is :class:`~decimal.Decimal` end to end (prices are
read from strings, never through floats). A model with no price raises :class:`UnknownModelPrice`,
which the agent turns into an Alert instead of recording a silent zero.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

PER_TOKENS = Decimal(1_000_000)


class UnknownModelPrice(LookupError):
    """No price entry for this model name (or none in force yet at the completion's time)."""

    def __init__(self, model_name: str, at: datetime | None = None) -> None:
        self.model_name = model_name
        self.at = at
        when = "" if at is None else f" in force at {at.isoformat()}"
        super().__init__(f"no price{when} for model {model_name!r}")


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, float):
        # YAML unquoted numbers arrive as floats; go through their shortest repr, not binary.
        value = repr(value)
    result = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if not result.is_finite() or result < 0:
        raise ValueError(f"price must be a finite non-negative number, got {value!r}")
    return result


class ModelPrice(BaseModel):
    """Prices for one model from ``effective_from`` (a UTC date) on, per 1M tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: date
    input: Decimal = Field(description="Price per 1M uncached prompt tokens.")
    output: Decimal = Field(description="Price per 1M completion tokens.")
    cached_input: Decimal = Field(description="Price per 1M cached prompt tokens.")

    @field_validator("input", "output", "cached_input", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Decimal:
        return _to_decimal(value)


class Cost(BaseModel):
    """The cost of one completion, split by token kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    currency: str
    price_effective_from: date
    input_tokens: int = Field(ge=0, description="Uncached prompt tokens.")
    cached_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    input_cost: Decimal
    cached_input_cost: Decimal
    output_cost: Decimal

    @computed_field  # type: ignore[prop-decorator]  # mypy does not support decorators over @property (pydantic documents this)
    @property
    def total(self) -> Decimal:
        """Total cost of the completion."""
        return self.input_cost + self.cached_input_cost + self.output_cost


class PriceTable(BaseModel):
    """All price entries, per model name, sorted by ``effective_from``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=1)
    models: dict[str, list[ModelPrice]]

    @model_validator(mode="after")
    def _check_entries(self) -> PriceTable:
        for name, entries in self.models.items():
            if not entries:
                raise ValueError(f"model {name!r} has no price entries")
            dates = [entry.effective_from for entry in entries]
            if len(set(dates)) != len(dates):
                raise ValueError(f"model {name!r} has two entries with the same effective_from")
            entries.sort(key=lambda entry: entry.effective_from)
        return self

    @classmethod
    def load(cls, path: Path | str) -> PriceTable:
        """Read and validate a price table YAML file."""
        with Path(path).open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping with 'models'")
        return cls.model_validate(raw)

    def entry_at(self, model_name: str, at: datetime) -> ModelPrice:
        """The entry in force for ``model_name`` at ``at`` (timezone-aware; compared as a UTC date)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        day = at.astimezone(UTC).date()
        entries = self.models.get(model_name)
        if not entries:
            raise UnknownModelPrice(model_name)
        in_force = [entry for entry in entries if entry.effective_from <= day]
        if not in_force:
            raise UnknownModelPrice(model_name, at)
        return in_force[-1]

    def total(self, model_name: str, at: datetime, prompt_tokens: int, completion_tokens: int,
              cached_tokens: int = 0) -> Decimal:
        """``price(...).total`` without building the breakdown (the stream worker's hot path)."""
        if min(prompt_tokens, completion_tokens, cached_tokens) < 0 or cached_tokens > prompt_tokens:
            return self.price(model_name, at, prompt_tokens, completion_tokens, cached_tokens).total  # raises
        entry = self.entry_at(model_name, at)
        return (entry.input * (prompt_tokens - cached_tokens) / PER_TOKENS
                + entry.cached_input * cached_tokens / PER_TOKENS + entry.output * completion_tokens / PER_TOKENS)

    def price(
        self,
        model_name: str,
        at: datetime,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> Cost:
        """Cost of one completion; ``cached_tokens`` is the cached part of ``prompt_tokens``."""
        if min(prompt_tokens, completion_tokens, cached_tokens) < 0:
            raise ValueError("token counts must be non-negative")
        if cached_tokens > prompt_tokens:
            raise ValueError(f"cached_tokens ({cached_tokens}) exceeds prompt_tokens ({prompt_tokens})")
        entry = self.entry_at(model_name, at)
        uncached = prompt_tokens - cached_tokens
        return Cost(
            model_name=model_name,
            currency=self.currency,
            price_effective_from=entry.effective_from,
            input_tokens=uncached,
            cached_tokens=cached_tokens,
            output_tokens=completion_tokens,
            input_cost=entry.input * uncached / PER_TOKENS,
            cached_input_cost=entry.cached_input * cached_tokens / PER_TOKENS,
            output_cost=entry.output * completion_tokens / PER_TOKENS,
        )
