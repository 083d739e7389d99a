"""One error body and one mapping from domain errors to HTTP status codes.

Domain code raises a ServiceError subclass; the ingress turns it into
{"error": {"code", "message", "detail"}} with the class's status. Deployments
raise the same classes, so an error born in a replica keeps its meaning.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error a client may cause or be told about."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, detail: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep message/detail across Ray's pickling between replicas.
        return (self.__class__, (self.message, self.detail, self.headers))

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        return error_body(self.code, self.message, self.detail, request_id)


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, code = 413, "too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"


class CorruptDocument(InvalidInput):
    code = "corrupt_document"


class EncryptedDocument(InvalidInput):
    code = "encrypted_document"


class Unavailable(ServiceError):
    status, code = 503, "unavailable"


class BadGateway(ServiceError):
    status, code = 502, "bad_gateway"


class UpstreamTimeout(ServiceError):
    status, code = 504, "upstream_timeout"


def error_body(
    code: str, message: str, detail: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    """The single JSON error shape every route returns."""
    error: dict[str, Any] = {"code": code, "message": message, "detail": detail}
    if request_id:
        error["request_id"] = request_id
    return {"error": error}


def unwrap(exc: BaseException) -> BaseException:
    """The domain error inside a Ray task error, if there is one."""
    seen = 0
    while seen < 5 and not isinstance(exc, ServiceError):
        cause = getattr(exc, "cause", None) or exc.__cause__
        if cause is None:
            break
        exc, seen = cause, seen + 1
    return exc
