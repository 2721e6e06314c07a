"""Dates a search query names become day windows (used to boost messages from those days)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from bot.dates import Window, spans, windows

TODAY = date(2024, 6, 15)


def days(query: str, *candidates: date) -> list[bool]:
    found = windows(query, TODAY)
    return [any(w(day) for w in found) for day in candidates]


def test_a_full_date_covers_the_week_around_it():
    assert days(
        "what did Mel do on 8 May, 2023?", date(2023, 5, 8), date(2023, 5, 14), date(2023, 5, 20)
    ) == [
        True,
        True,
        False,
    ]
    assert days("May 25, 2023 plans", date(2023, 5, 25), date(2024, 5, 25)) == [True, False]
    assert days("call on 2023-07-04", date(2023, 7, 1), date(2023, 8, 1)) == [True, False]


def test_a_month_covers_it_and_the_days_after():
    assert days("in July 2023", date(2023, 7, 31), date(2023, 8, 9), date(2023, 8, 20), date(2022, 7, 5)) == [
        True,
        True,
        False,
        False,
    ]
    assert days("the trip in August", date(2021, 8, 3), date(2023, 9, 5), date(2023, 10, 1)) == [
        True,
        True,
        False,
    ]


def test_years_and_relative_days():
    assert days("what happened in 2022", date(2022, 3, 1), date(2023, 3, 1)) == [True, False]
    assert days("what did we say yesterday", date(2024, 6, 14), date(2024, 6, 10)) == [True, False]
    assert days("anything last week", date(2024, 6, 5), date(2024, 5, 1)) == [True, False]


def test_words_that_only_look_like_months_are_not_dates():
    assert windows("may I ask what you may like", TODAY) == []
    assert windows("what did she paint", TODAY) == []
    assert windows("31 February, 2023", TODAY) == []  # no such day: ignored, not an error


def test_windows_become_merged_spans_of_instants_in_the_persons_zone():
    zone = ZoneInfo("Europe/Berlin")
    found = spans(
        [Window(date(2023, 5, 1), date(2023, 5, 8)), Window(date(2023, 5, 9), date(2023, 5, 10))], zone
    )
    assert [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in found] == [
        (datetime(2023, 4, 30, 22, tzinfo=UTC), datetime(2023, 5, 10, 22, tzinfo=UTC))
    ]
    apart = spans(
        [Window(date(2023, 7, 1), date(2023, 7, 2)), Window(date(2023, 5, 1), date(2023, 5, 1))], UTC
    )
    assert [a.date() for a, _ in apart] == [date(2023, 5, 1), date(2023, 7, 1)]


def test_a_month_without_a_year_is_that_month_in_each_recent_year():
    found = windows("the trip in August", TODAY)
    assert [w.first for w in found] == [date(year, 8, 1) for year in range(2014, 2024)]  # none ahead of today
    assert all(w.last == date(w.first.year, 9, 10) for w in found)
