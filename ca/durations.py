"""Durations ("90s", "30m", "2h", "1d", "1h30m" or whole seconds) and ISO 8601 times."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ca.errors import InvalidDuration, quote_value

# No grant, token or TTL in sshca is meant to last this long. The cap also
# keeps absurd input such as 10**30 away from timedelta, which would overflow.
MAX_DURATION = timedelta(days=3650)
MAX_DURATION_TEXT = "10 years (3650d)"

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

# Units in falling order, each at most once ("1d", "2h", "1h30m", "90s").
_DURATION = re.compile(
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?(?:(?P<s>[0-9]+)s)?"
)
_SECONDS = re.compile(r"[0-9]+")

# More digits than any allowed duration needs. The length is checked before
# int(), so a huge digit string gets the clear message instead of Python's
# int conversion error.
_MAX_DIGITS = 12

_FORMAT_HINT = "write a whole number of seconds or a duration such as '90s', '30m', '2h', '1d' or '1h30m'"


def _fail(value: object, field: str, reason: str) -> InvalidDuration:
    return InvalidDuration(
        f"invalid {field} {quote_value(value)}: {reason}",
        code="invalid_duration",
        field=field,
        value=value,
    )


def _check_range(seconds: int, value: object, field: str) -> timedelta:
    if seconds <= 0:
        raise _fail(value, field, "a duration must be longer than zero")

    if seconds > MAX_DURATION.total_seconds():
        raise _fail(value, field, f"a duration must be at most {MAX_DURATION_TEXT}")

    return timedelta(seconds=seconds)


def parse_duration(value: str | int, *, field: str = "duration") -> timedelta:
    """Parse a duration into a positive timedelta of at most 10 years.

    Accepts an int of whole seconds, a digit string of whole seconds, or a
    string of units in falling order ("1d", "2h", "1h30m", "90s"). Raises
    InvalidDuration (code ``invalid_duration``) naming ``field`` and the value
    for bools, floats, zero, negative numbers, white space, unknown units and
    durations over the cap.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _fail(value, field, _FORMAT_HINT)

    if isinstance(value, int):
        return _check_range(value, value, field)

    if _SECONDS.fullmatch(value):
        if len(value) > _MAX_DIGITS:
            raise _fail(value, field, f"a duration must be at most {MAX_DURATION_TEXT}")
        return _check_range(int(value), value, field)

    match = _DURATION.fullmatch(value)
    if not value or match is None:
        raise _fail(value, field, _FORMAT_HINT)

    seconds = 0
    for unit, digits in match.groupdict().items():
        if digits is None:
            continue
        if len(digits) > _MAX_DIGITS:
            raise _fail(value, field, f"a duration must be at most {MAX_DURATION_TEXT}")
        seconds += int(digits) * _UNIT_SECONDS[unit]

    return _check_range(seconds, value, field)


def format_duration(td: timedelta) -> str:
    """Format a timedelta the way parse_duration reads it.

    Whole minutes are written in days, hours and minutes ("2h", "1h30m",
    "1d4h"); anything else as whole seconds ("90s"). Fractions of a second
    are dropped.
    """
    total = int(td.total_seconds())
    if total < 0:
        return "-" + format_duration(-td)

    if total == 0:
        return "0s"

    if total % 60:
        return f"{total}s"

    parts = []
    remaining = total
    for unit in ("d", "h", "m"):
        count, remaining = divmod(remaining, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")

    return "".join(parts)


def parse_time(value: str, *, field: str) -> datetime:
    """Parse an ISO 8601 time with a UTC offset or 'Z' into an aware UTC datetime.

    Raises InvalidDuration (code ``invalid_time``) for anything that is not a
    string, not ISO 8601, or has no offset, because a time without an offset
    would silently take the server's time zone.
    """
    if not isinstance(value, str):
        raise InvalidDuration(
            f"invalid {field} {quote_value(value)}: expected an ISO 8601 time such as '2026-12-04T19:30:00Z'",
            code="invalid_time",
            field=field,
            value=value,
        )

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidDuration(
            f"invalid {field} {quote_value(value)}: expected an ISO 8601 time such as '2026-12-04T19:30:00Z'",
            code="invalid_time",
            field=field,
            value=value,
        ) from None

    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidDuration(
            f"invalid {field} {quote_value(value)}: the time has no UTC offset; "
            "add 'Z' or an offset such as '+01:00'",
            code="invalid_time",
            field=field,
            value=value,
        )

    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidDuration(
            f"invalid {field} {quote_value(value)}: the time is out of range",
            code="invalid_time",
            field=field,
            value=value,
        ) from None
