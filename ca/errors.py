"""Domain errors raised by the signing core.

Every error carries a stable machine ``code``, the input ``field`` it is about
and the offending ``value``, so a caller can map it to its own error format
(the server turns it into an HTTP status and a JSON body). ``str(exc)`` is the
human message, which names the value and the fix. No error message or value
built in this package contains a passphrase or a private key.
"""

from __future__ import annotations


class CAError(ValueError):
    """Base class of every domain error in sshca."""

    default_code = "invalid_value"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.value = value

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"field={self.field!r}, value={self.value!r})"
        )


class InvalidName(CAError):
    """A login, host name, group name or principal is not valid."""

    default_code = "invalid_name"


class InvalidPublicKey(CAError):
    """A user public key is malformed, unsupported, too weak or not allowed."""

    default_code = "invalid_public_key"


class InvalidCertificateSpec(CAError):
    """A certificate request breaks a signing rule (principals, serial, window, options)."""

    default_code = "invalid_certificate_spec"


class InvalidDuration(CAError):
    """A duration or a point in time is malformed or out of range."""

    default_code = "invalid_duration"


class CAKeyError(CAError):
    """A CA key file cannot be written or loaded: permissions, passphrase or format."""

    default_code = "ca_key_error"


class KRLError(CAError):
    """A key revocation list cannot be built or written."""

    default_code = "krl_error"


def quote_value(value: object, limit: int = 80) -> str:
    """Return repr(value) for an error message, shortened to about ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
