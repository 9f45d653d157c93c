"""Price table: loading the shipped prices.yaml, the entry in force, cached-token billing, unknown models."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.core.resources import package_path
from streams.cost import PriceTable, UnknownModelPrice


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load(package_path("streams.cost", "prices.yaml"))


def test_repo_price_file_has_demo_model(table: PriceTable) -> None:
    entry = table.entry_at("SmolLM2-135M-Instruct", datetime(2026, 1, 1, tzinfo=UTC))
    assert entry.input == Decimal("0.02")
    assert entry.output == Decimal("0.04")
    assert entry.cached_input == Decimal("0.01")


def test_price_splits_cached_tokens_exactly(table: PriceTable) -> None:
    cost = table.price("gpt-4o-mini", datetime(2025, 3, 1, tzinfo=UTC), 1000, 500, cached_tokens=400)
    assert cost.input_tokens == 600
    assert cost.input_cost == Decimal("0.15") * 600 / 1_000_000
    assert cost.cached_input_cost == Decimal("0.075") * 400 / 1_000_000
    assert cost.output_cost == Decimal("0.60") * 500 / 1_000_000
    assert cost.total == Decimal("0.000420")  # 0.00009 + 0.00003 + 0.0003, no float noise
    assert cost.model_dump(mode="json")["total"] == "0.00042"


def test_entry_in_force_at_completion_time(table: PriceTable) -> None:
    before = table.price("gpt-4o", datetime(2024, 9, 30, 23, 59, tzinfo=UTC), 1_000_000, 0)
    after = table.price("gpt-4o", datetime(2024, 10, 1, 0, 0, tzinfo=UTC), 1_000_000, 0)
    assert before.total == Decimal("5.00") and before.price_effective_from == date(2024, 5, 13)
    assert after.total == Decimal("2.50") and after.price_effective_from == date(2024, 10, 1)
    # A non-UTC timestamp is compared by its UTC date: 2024-10-01 01:00+02:00 is still 09-30 UTC.
    plus_two = timezone(timedelta(hours=2))
    assert table.price("gpt-4o", datetime(2024, 10, 1, 1, 0, tzinfo=plus_two), 1_000_000, 0).total == Decimal("5.00")


def test_unknown_model_raises_never_zero(table: PriceTable) -> None:
    with pytest.raises(UnknownModelPrice) as info:
        table.price("no-such-model", datetime(2026, 1, 1, tzinfo=UTC), 10, 10)
    assert info.value.model_name == "no-such-model"
    with pytest.raises(UnknownModelPrice):  # known model, but no entry in force yet
        table.price("gpt-4o", datetime(2024, 1, 1, tzinfo=UTC), 10, 10)


def test_rejects_bad_inputs(table: PriceTable) -> None:
    with pytest.raises(ValueError):
        table.price("gpt-4o", datetime(2025, 1, 1, tzinfo=UTC), 10, 10, cached_tokens=11)
    with pytest.raises(ValueError):
        table.price("gpt-4o", datetime(2025, 1, 1), 10, 10)  # naive datetime


def test_yaml_floats_do_not_leak_binary_noise(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n  m:\n    - {effective_from: 2025-01-01, input: 0.1, output: 0.2, cached_input: 0.05}\n",
        encoding="utf-8",
    )
    table = PriceTable.load(path)
    assert table.entry_at("m", datetime(2025, 6, 1, tzinfo=UTC)).input == Decimal("0.1")


def test_rejects_negative_and_duplicate_entries() -> None:
    with pytest.raises(ValidationError):
        PriceTable.model_validate(
            {"models": {"m": [{"effective_from": "2025-01-01", "input": "-1", "output": "1", "cached_input": "1"}]}}
        )
    entry = {"effective_from": "2025-01-01", "input": "1", "output": "1", "cached_input": "1"}
    with pytest.raises(ValidationError):
        PriceTable.model_validate({"models": {"m": [entry, entry]}})


def test_total_is_the_price_breakdowns_total() -> None:
    table = PriceTable.load(package_path("streams.cost", "prices.yaml"))
    at = datetime(2026, 6, 1, tzinfo=UTC)
    for model in table.models:
        for prompt, completion, cached in ((0, 0, 0), (1000, 250, 0), (5000, 17, 4000), (1, 1, 1)):
            assert table.total(model, at, prompt, completion, cached) == table.price(model, at, prompt, completion,
                                                                                     cached).total
