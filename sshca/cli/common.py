"""Helpers shared by the client commands: option types and the API client from settings."""

import json
from datetime import datetime, timezone

import click

from ca.durations import parse_duration, parse_time
from ca.errors import CAError
from sshca.cli.config import load_settings
from sshca.cli.http import ApiClient

CONTEXT = {"help_option_names": ["-h", "--help"]}


class DurationType(click.ParamType):
    """A duration such as ``90s``, ``30m``, ``2h``, ``1d`` or whole seconds."""

    name = "DURATION"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return parse_duration(value, field=param.name if param else "duration")
        except CAError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(click.ParamType):
    """An ISO 8601 time with an offset, such as ``2026-12-04T19:30:00+01:00``."""

    name = "TIME"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return parse_time(value, field=param.name if param else "time")
        except CAError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()
TIME = TimeType()
REQUEST_ID = click.IntRange(min=1)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_client() -> ApiClient:
    return ApiClient(load_settings())


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))
