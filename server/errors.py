"""Errors the service layer raises; the API turns each into its HTTP status and JSON body."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused operation: ``status`` is the HTTP status, ``code`` a stable machine code."""

    status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class TooManyRequests(ServiceError):
    status = 429

