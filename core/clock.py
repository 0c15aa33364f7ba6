"""The one place that reads the time, so tests can freeze it (time-machine)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

UK = ZoneInfo("Europe/London")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def uk_today() -> dt.date:
    return utc_now().astimezone(UK).date()


def uk_date(moment: dt.datetime) -> dt.date:
    """The UK calendar date of a UTC moment (Gift Aid dates are UK dates)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(UK).date()


def from_unix(seconds: int | float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def isoformat_z(moment: dt.datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`, the JSON timestamp format of the contract."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_years(day: dt.date, years: int) -> dt.date:
    """The same day `years` later (or earlier); 29 February becomes 28 February in a year without one."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)
