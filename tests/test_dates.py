"""Dates a search query names become day windows (used to boost messages from those days)."""

from __future__ import annotations

from datetime import date

from bot.dates import windows

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
