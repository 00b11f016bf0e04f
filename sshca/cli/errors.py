"""The one exception the client commands raise for expected failures."""

import click


class CommandError(click.ClickException):
    """A refused or failed command: click prints ``Error: <message>`` and exits 1.

    The message is kept on one line so scripts and logs can grep it.
    """

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
