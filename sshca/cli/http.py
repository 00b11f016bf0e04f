"""HTTP calls to the sshca server, with every failure turned into a one-line error.

The token is sent only in the Authorization header. It never appears in
an error message, because messages are built from the URL, the status
and the server's own error text.
"""

import errno
import re
from collections.abc import Iterator

import requests

from sshca.cli.config import Settings
from sshca.cli.errors import CommandError

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
# Server error bodies longer than this are cut in messages.
MAX_MESSAGE_LENGTH = 500


class ApiError(CommandError):
    """A 4xx or 5xx response from the server."""

    def __init__(self, message: str, *, status: int, code: str | None):
        super().__init__(message)
        self.status = status
        self.code = code


class ApiClient:
    """A JSON client for one sshca server, authenticated with a bearer token."""

    def __init__(self, settings: Settings):
        self.server = settings.server
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "sshca-cli"
        if settings.token:
            self._session.headers["Authorization"] = f"Bearer {settings.token}"

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def get(self, path: str, params: dict | None = None) -> dict:
        return self._json(self._send("GET", path, params=params))

    def post(self, path: str, body: dict | None = None) -> dict:
        return self._json(self._send("POST", path, json=body or {}))

    def stream(self, path: str, params: dict | None = None) -> Iterator[bytes]:
        """Yield the response body of a GET in chunks, for CSV and JSON Lines exports."""
        response = self._send("GET", path, params=params, stream=True)
        with response:
            try:
                yield from response.iter_content(chunk_size=65536)
            except requests.RequestException as exc:
                raise CommandError(
                    f"the connection to the sshca server at {self.server} broke "
                    f"during the download: {_reason(exc)}; try again"
                )

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        url = self.server + path
        try:
            response = self._session.request(
                method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs
            )
        except requests.exceptions.SSLError as exc:
            raise CommandError(
                f"TLS failed with the sshca server at {self.server}: {_reason(exc)}; "
                "check the URL and the server's certificate"
            )
        except requests.ConnectTimeout:
            raise CommandError(
                f"cannot reach the sshca server at {self.server}: connection timed out "
                f"after {CONNECT_TIMEOUT}s; check the URL or run `sshca login`"
            )
        except requests.Timeout:
            raise CommandError(
                f"the request to the sshca server at {self.server} timed out after "
                f"{READ_TIMEOUT}s; try again or check the URL"
            )
        except requests.ConnectionError as exc:
            raise CommandError(
                f"cannot reach the sshca server at {self.server}: {_reason(exc)}; "
                "check the URL or run `sshca login`"
            )
        except requests.RequestException as exc:
            raise CommandError(
                f"request to the sshca server at {self.server} failed: {_reason(exc)}"
            )

        if response.status_code >= 400:
            with response:
                raise self._error(response)
        return response

    def _json(self, response: requests.Response) -> dict:
        with response:
            try:
                data = response.json()
            except ValueError:
                data = None
        if not isinstance(data, dict):
            raise CommandError(
                f"unexpected response from {response.url} (HTTP "
                f"{response.status_code}, not a JSON object); check that "
                f"{self.server} is an sshca server"
            )
        return data

    def _error(self, response: requests.Response) -> ApiError:
        status = response.status_code
        code, message = _error_body(response)

        if status == 401:
            detail = f" ({message})" if message else ""
            return ApiError(
                f"the sshca server at {self.server} rejected your API token{detail}; "
                f"run `sshca login --server {self.server}` with a valid token",
                status=status,
                code=code,
            )
        if message:
            return ApiError(message, status=status, code=code)
        if status >= 500:
            return ApiError(
                f"the sshca server at {self.server} failed (HTTP {status}); "
                "try again later or tell its admin",
                status=status,
                code=code,
            )
        # No sshca error body: most likely the URL points at another web server.
        return ApiError(
            f"unexpected HTTP {status} {response.reason} from {self.server} for "
            f"{response.request.path_url}; check that {self.server} is the sshca server's URL",
            status=status,
            code=code,
        )


def _error_body(response: requests.Response) -> tuple[str | None, str | None]:
    """Return (code, message) from an error body ``{"error": {"code", "message"}}``."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    elif isinstance(error, str):
        code, message = None, error
    else:
        return None, None
    if isinstance(message, str) and message.strip():
        message = message.strip()
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[:MAX_MESSAGE_LENGTH] + "..."
    else:
        message = None
    return (code if isinstance(code, str) else None), message


def _reason(exc: BaseException) -> str:
    """Return a short reason such as "connection refused" from a requests exception.

    requests wraps urllib3 errors that wrap the OSError from the socket; the
    innermost OSError carries the useful part.
    """
    seen = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None and current.strerror:
            if current.errno == errno.ECONNREFUSED:
                return "connection refused"
            return current.strerror[0].lower() + current.strerror[1:]
        for nested in (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *getattr(current, "args", ()),
        ):
            if isinstance(nested, BaseException):
                pending.append(nested)

    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        return match.group(1).strip()
    return text.split("\n")[0][:200]
