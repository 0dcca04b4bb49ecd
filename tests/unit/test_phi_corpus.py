"""The leak canaries' own instruments (tests/phi_corpus.py): a corpus that depends on its seed
only, and a leak scan that finds reformatted values without counting chance digit runs."""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo

import pytest
from faker import Faker

from tests.phi_corpus import BORN, date_of_birth, generate, leaks


def test_a_seed_gives_the_same_corpus_whatever_the_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faker's date_of_birth counts back from today, so the canaries' corpus changed daily (the
    run of 2026-12-01 met a date the run before had not). Made on two different 'todays', the
    corpus is the same."""
    import faker.providers.date_time as date_time

    def corpus_on(day: date) -> list[tuple[str, dict[str, object]]]:
        class Clock(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Clock:
                return cls(day.year, day.month, day.day, 12, tzinfo=tz)

        monkeypatch.setattr(date_time, "datetime", Clock)
        # the provider's own clock, as its date_of_birth reads it: moved by the patch above
        assert day - timedelta(days=366) <= Faker().date_of_birth(minimum_age=0, maximum_age=0) <= day
        return [(item.text, item.context) for item in generate(40, seed=7, others=True)]

    assert corpus_on(date(2026, 11, 30)) == corpus_on(date(2031, 6, 1))


def test_dates_of_birth_lie_in_the_fixed_range() -> None:
    fk = Faker("de_DE")
    fk.seed_instance(3)
    born = [date_of_birth(fk) for _ in range(500)]
    assert all(BORN[0] <= d <= BORN[1] for d in born)
    assert len({d.year for d in born}) > 50  # spread over the century, not one year


@pytest.mark.parametrize(
    "text",
    ["born 7.6.1944.", "born 7 6 1944", "born 7/6/1944, phone", "DOB: 761944", "(7-6-1944)"],
)
def test_a_short_value_is_found_written_any_way(text: str) -> None:
    assert leaks(["7.6.1944"], text) == ["7.6.1944"]


@pytest.mark.parametrize(
    "text",
    [
        "call +72555376194410521 today",  # inside a (tokenised) phone number
        "IBAN DE12 3761 9440 0012",  # across the groups of a number, inside each end
        "on 17.6.1944",  # another date
        "on 7.6.19445",
    ],
)
def test_a_short_value_inside_other_digits_is_no_leak(text: str) -> None:
    assert leaks(["7.6.1944"], text) == []


def test_a_long_value_is_found_reformatted_anywhere() -> None:
    """Eight or more folded characters do not turn up by chance: found even run into others."""
    assert leaks(["0115 4960447"], "call 901154960447x") == ["0115 4960447"]
    assert leaks(["Paige Shah"], "dear PAIGE-SHAH,") == ["Paige Shah"]
