"""Dates named in a search query ("on 3 June, 2023", "in July", "last week") as day predicates.

Search boosts messages from the days a query names. Windows are generous on purpose: people say
"in May" of something that came up in the first days of June, and "on 8 May" of a week around it.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, timedelta

Window = Callable[[date], bool]

NEAR_DAY = timedelta(days=7)
AFTER_MONTH = timedelta(days=10)

MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
MONTHS["sept"] = 9
_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"

DAY_MONTH_YEAR = re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b", re.I)
MONTH_DAY_YEAR = re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b", re.I)
ISO_DAY = re.compile(r"\b(?P<year>(?:19|20)\d\d)-(?P<month>[01]\d)-(?P<day>[0-3]\d)\b")
MONTH_YEAR = re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.I)
MONTH_ONLY = re.compile(rf"\b{_MONTH}\b", re.I)
YEAR_ONLY = re.compile(rf"\b(?:in|of|during|since)\s+{_YEAR}\b", re.I)
RELATIVE = {
    "today": (0, 0),
    "yesterday": (1, 1),
    "last week": (14, 0),
    "this week": (7, 0),
    "last month": (62, 0),
    "this month": (31, 0),
    "last year": (731, 0),
}


def _between(first: date, last: date) -> Window:
    return lambda day: first <= day <= last


def _month_window(year: int | None, month: int) -> Window:
    if year is not None:
        first = date(year, month, 1)
        last = date(year, month, calendar.monthrange(year, month)[1]) + AFTER_MONTH
        return _between(first, last)

    def any_year(day: date) -> bool:
        if day.month == month:
            return True
        before = day - AFTER_MONTH
        return before.month == month

    return any_year


def _day(year: str, month: str, day: str) -> date | None:
    number = MONTHS.get(month.lower().rstrip(".")) if not month.isdigit() else int(month)
    try:
        return date(int(year), number or 0, int(day))
    except ValueError:
        return None


def windows(query: str, today: date) -> list[Window]:
    """The day windows `query` names (empty if it names none). `today` anchors "yesterday" etc."""
    found: list[Window] = []
    text = query
    for pattern in (DAY_MONTH_YEAR, MONTH_DAY_YEAR, ISO_DAY):
        for match in pattern.finditer(text):
            day = _day(match["year"], match["month"], match["day"])
            if day:
                found.append(_between(day - NEAR_DAY, day + NEAR_DAY))
        text = pattern.sub(" ", text)
    for match in MONTH_YEAR.finditer(text):
        found.append(_month_window(int(match["year"]), MONTHS[match["month"].lower()]))
    text = MONTH_YEAR.sub(" ", text)
    for match in MONTH_ONLY.finditer(text):
        word = match["month"]
        if word.lower() == "may" or (len(word) == 3 and not word.istitle()):
            continue  # a bare "may" is a verb far more often than a month; so is "mar", "sat"...
        found.append(_month_window(None, MONTHS[word.lower()]))
    for match in YEAR_ONLY.finditer(text):
        year = int(match["year"])
        found.append(_between(date(year, 1, 1), date(year, 12, 31)))
    lowered = query.lower()
    for phrase, (back, forward) in RELATIVE.items():
        if re.search(rf"\b{phrase}\b", lowered):
            found.append(_between(today - timedelta(days=back), today + timedelta(days=forward)))
    return found
