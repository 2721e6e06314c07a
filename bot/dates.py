"""Dates named in a search query ("on 3 June, 2023", "in July", "last week") as spans of days.

Search takes its first candidates from the days a query names (see bot.retrieval). Windows are
generous on purpose: people say "in May" of something that came up in the first days of June, and
"on 8 May" of a week around it.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

NEAR_DAY = timedelta(days=7)
AFTER_MONTH = timedelta(days=10)
YEARS_BACK = 10  # a month named without a year: that month in each of the last YEARS_BACK years


@dataclass(frozen=True)
class Window:
    """The days from `first` to `last`, both included, in the person's calendar."""

    first: date
    last: date

    def __call__(self, day: date) -> bool:
        return self.first <= day <= self.last


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
    return Window(first, last)


def _month_window(year: int, month: int) -> Window:
    first = date(year, month, 1)
    return Window(first, date(year, month, calendar.monthrange(year, month)[1]) + AFTER_MONTH)


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
        month = MONTHS[word.lower()]
        last = today.year if month <= today.month else today.year - 1
        found.extend(_month_window(year, month) for year in range(last - YEARS_BACK + 1, last + 1))
    for match in YEAR_ONLY.finditer(text):
        year = int(match["year"])
        found.append(_between(date(year, 1, 1), date(year, 12, 31)))
    lowered = query.lower()
    for phrase, (back, forward) in RELATIVE.items():
        if re.search(rf"\b{phrase}\b", lowered):
            found.append(_between(today - timedelta(days=back), today + timedelta(days=forward)))
    return found


def spans(found: list[Window], zone: tzinfo) -> list[tuple[datetime, datetime]]:
    """The windows as [start, end) instants (the first day's midnight to the day after the last, in
    `zone`), overlapping ones merged, in order: what a range query over message times needs."""
    merged: list[list[date]] = []
    for window in sorted(found, key=lambda w: (w.first, w.last)):
        if merged and window.first <= merged[-1][1] + timedelta(days=1):
            merged[-1][1] = max(merged[-1][1], window.last)
        else:
            merged.append([window.first, window.last])
    return [
        (datetime.combine(first, time.min, zone), datetime.combine(last + timedelta(days=1), time.min, zone))
        for first, last in merged
    ]
