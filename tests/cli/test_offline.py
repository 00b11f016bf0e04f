"""Client behaviour that needs no server: help, usage errors, an unreachable server."""

import functools
import http.server
import socket
import stat
import threading

import pytest

SUBCOMMANDS = [
    ["login"], ["request"], ["list"], ["show"], ["cert"], ["approve"], ["deny"],
    ["cancel"], ["revoke"], ["extend"], ["audit"], ["audit", "events"],
    ["audit", "certs"], ["audit", "verify"],
]


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=" ".join)
def test_help_on_subcommand(cli, args):
    result = cli.run(*args, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: sshca {' '.join(args)} ")


def test_bad_duration_is_usage_error(cli):
    result = cli.run("request", "db1", "--login", "deploy", "--for", "abc", "--reason", "x",
                     env={"SSHCA_SERVER": f"http://127.0.0.1:{closed_port()}", "SSHCA_TOKEN": "t"})

    assert result.returncode == 2
    assert "'abc'" in result.stderr
    assert "--for" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_start_time_is_usage_error(cli):
    result = cli.run("request", "db1", "--login", "deploy", "--for", "1h", "--reason", "x",
                     "--start", "2026-12-04T10:00:00")

    assert result.returncode == 2
    assert "no UTC offset" in result.stderr


def test_missing_reason_is_usage_error(cli):
    result = cli.run("request", "db1", "--login", "deploy", "--for", "1h")

    assert result.returncode == 2
    assert "--reason" in result.stderr


def test_request_id_must_be_positive(cli):
    result = cli.run("show", "0")

    assert result.returncode == 2
    assert "'ID'" in result.stderr


def test_no_config_says_login(cli):
    result = cli.run("list")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: no sshca server configured: run `sshca login --server URL` or set SSHCA_SERVER"
    )


@pytest.mark.parametrize("args", [["list"], ["show", "1"], ["approve", "1"], ["audit", "verify"]])
def test_server_down_one_line(cli, args):
    url = f"http://127.0.0.1:{closed_port()}"

    result = cli.run(*args, env={"SSHCA_SERVER": url, "SSHCA_TOKEN": "secret-token"})

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: cannot reach the sshca server at {url}: ")
    assert "connection refused" in result.stderr
    assert "sshca login" in result.stderr
    assert "secret-token" not in result.stderr


def test_login_server_down_stores_nothing(cli):
    url = f"http://127.0.0.1:{closed_port()}"

    result = cli.run("login", "--server", url, input="secret-token\n")

    assert result.returncode == 1
    assert f"cannot reach the sshca server at {url}" in result.stderr
    assert not (cli.home / ".config" / "sshca" / "config.toml").exists()


def test_login_no_check_stores_0600(cli):
    result = cli.run("login", "--server", "http://127.0.0.1:9/", "--no-check",
                     input="secret-token\n")

    assert result.returncode == 0, result.stderr
    path = cli.home / ".config" / "sshca" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert 'server = "http://127.0.0.1:9"' in path.read_text()
    assert 'token = "secret-token"' in path.read_text()
    assert "secret-token" not in result.stdout + result.stderr


def test_login_empty_token(cli):
    result = cli.run("login", "--server", "http://127.0.0.1:9", "--no-check", input="\n")

    assert result.returncode == 1
    assert "no API token given" in result.stderr


def test_login_has_no_token_option(cli):
    result = cli.run("login", "--server", "http://127.0.0.1:9", "--token", "x")

    assert result.returncode == 2


@pytest.fixture
def plain_web_server(tmp_path):
    """A web server on 127.0.0.1 that is not sshca: every path is 404 HTML, / is a page."""
    (tmp_path / "index.html").write_text("<html>hello</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_not_an_sshca_server(cli, plain_web_server):
    result = cli.run("list", env={"SSHCA_SERVER": plain_web_server, "SSHCA_TOKEN": "t"})

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"unexpected HTTP 404 File not found from {plain_web_server} for /v1/requests" in result.stderr
    assert "sshca server's URL" in result.stderr


def test_login_to_non_sshca_server(cli, plain_web_server):
    result = cli.run("login", "--server", plain_web_server, input="token\n")

    assert result.returncode == 1
    assert "unexpected HTTP 404" in result.stderr
    assert not (cli.home / ".config" / "sshca" / "config.toml").exists()
