from datetime import datetime, timedelta, timezone

import pytest

from ca.durations import MAX_DURATION, format_duration, parse_duration, parse_time
from ca.errors import InvalidDuration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("3600", timedelta(hours=1)),
        (3600, timedelta(hours=1)),
        (1, timedelta(seconds=1)),
        ("3650d", MAX_DURATION),
        (int(MAX_DURATION.total_seconds()), MAX_DURATION),
    ],
)
def test_parse_duration_valid(value, expected):
    assert parse_duration(value) == expected


FORMAT_HINT = r"write a whole number of seconds or a duration such as '90s'"
TOO_LONG = r"a duration must be at most 10 years \(3650d\)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, r"invalid duration True: " + FORMAT_HINT),
        (False, r"invalid duration False: " + FORMAT_HINT),
        (1.5, r"invalid duration 1\.5: " + FORMAT_HINT),
        (None, r"invalid duration None: " + FORMAT_HINT),
        (0, r"invalid duration 0: a duration must be longer than zero"),
        ("0", r"invalid duration '0': a duration must be longer than zero"),
        ("0s", r"a duration must be longer than zero"),
        ("0h0m", r"a duration must be longer than zero"),
        (-5, r"invalid duration -5: a duration must be longer than zero"),
        ("-5", r"invalid duration '-5': " + FORMAT_HINT),
        ("1.5h", FORMAT_HINT),
        ("", r"invalid duration '': " + FORMAT_HINT),
        (" 2h", FORMAT_HINT),
        ("2h ", FORMAT_HINT),
        ("2H", FORMAT_HINT),
        ("2 h", FORMAT_HINT),
        ("h", FORMAT_HINT),
        ("2w", FORMAT_HINT),
        ("30m2h", FORMAT_HINT),
        ("2h2h", FORMAT_HINT),
        ("１h", FORMAT_HINT),
        (10**30, r"invalid duration 1000000000000000000000000000000: " + TOO_LONG),
        ("99999999999d", r"invalid duration '99999999999d': " + TOO_LONG),
        ("3651d", TOO_LONG),
        (int(MAX_DURATION.total_seconds()) + 1, TOO_LONG),
        ("9" * 5000, r"\(5002 characters\): " + TOO_LONG),
        ("9" * 5000 + "d", TOO_LONG),
    ],
)
def test_parse_duration_invalid(value, message):
    with pytest.raises(InvalidDuration, match=message) as info:
        parse_duration(value)

    assert info.value.code == "invalid_duration"
    assert info.value.field == "duration"


def test_parse_duration_names_field():
    with pytest.raises(InvalidDuration, match=r"invalid max_duration 'forever'") as info:
        parse_duration("forever", field="max_duration")

    assert info.value.field == "max_duration"
    assert info.value.value == "forever"


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(hours=2), "2h"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(days=1, hours=4), "1d4h"),
        (timedelta(days=2), "2d"),
        (timedelta(seconds=3661), "3661s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-90), "-90s"),
        (timedelta(seconds=59, microseconds=900000), "59s"),
    ],
)
def test_format_duration(td, text):
    assert format_duration(td) == text


@pytest.mark.parametrize("text", ["90s", "2h", "1h30m", "1d4h", "3661s", "3650d"])
def test_format_parse_round_trip(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-04T19:30:00Z", datetime(2026, 12, 4, 19, 30, tzinfo=timezone.utc)),
        ("2026-12-04T20:30:00+01:00", datetime(2026, 12, 4, 19, 30, tzinfo=timezone.utc)),
        ("2026-12-04T14:30:00.5-05:00", datetime(2026, 12, 4, 19, 30, 0, 500000, tzinfo=timezone.utc)),
    ],
)
def test_parse_time_valid(value, expected):
    parsed = parse_time(value, field="starts_at")

    assert parsed == expected
    assert parsed.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-12-04T19:30:00", r"invalid starts_at '2026-12-04T19:30:00': the time has no UTC offset"),
        ("2026-12-04", r"the time has no UTC offset"),
        ("tomorrow", r"invalid starts_at 'tomorrow': expected an ISO 8601 time"),
        ("", r"expected an ISO 8601 time"),
        (1733340600, r"invalid starts_at 1733340600: expected an ISO 8601 time"),
        ("0001-01-01T00:00:00+01:00", r"the time is out of range"),
    ],
)
def test_parse_time_invalid(value, message):
    with pytest.raises(InvalidDuration, match=message) as info:
        parse_time(value, field="starts_at")

    assert info.value.code == "invalid_time"
    assert info.value.field == "starts_at"
