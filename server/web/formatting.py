"""Jinja filters for times, durations and states on the pages."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ca.durations import format_duration

def format_when(value: datetime | None) -> str:
    """Format an aware time as ``2026-12-04 19:30:05 UTC``; None becomes an empty string."""
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_seconds(seconds: int | None) -> str:
    """Format a whole number of seconds as ``2h``, ``1h30m`` or ``90s``."""
    if not seconds:
        return ""
    return format_duration(timedelta(seconds=seconds))


def format_time_left(deadline: datetime | None, now: datetime) -> str:
    """Return the time until ``deadline`` in minutes or more, such as ``3h12m``, or ``none``."""
    if deadline is None:
        return ""
    left = deadline - now
    if left <= timedelta(0):
        return "none"
    if left < timedelta(minutes=1):
        return "under 1m"
    return format_duration(timedelta(minutes=int(left.total_seconds() // 60)))
