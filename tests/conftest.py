"""Fixtures shared by every test package.

The real components the tests start (sshd, PostgreSQL, the sshca server)
each have a module in ``tests/support`` that defines its fixtures.
"""

pytest_plugins = [
    "tests.support.sshd",
    "tests.support.postgres",
    "tests.support.live_server",
]
