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
    # A message as a client would see it: the OpenAPI document's example for the status.
    example: ClassVar[str] = "internal error: report the request id to the operator"

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
    example = "missing or wrong X-API-Key header"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"
    example = "source.path points outside the upload base"


class NotFound(ServiceError):
    status, code = 404, "not_found"
    example = "no file 'inbox/x.pdf' under the upload base"


class Conflict(ServiceError):
    status, code = 409, "conflict"
    example = "a training is already running"


class PayloadTooLarge(ServiceError):
    status, code = 413, "too_large"
    example = "3 pages selected; at most 2 per request"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"
    example = "not a PDF or an image"


class InvalidInput(ServiceError):
    status, code = 422, "invalid_input"
    example = "invalid request: body.texts: Field required"


class CorruptDocument(InvalidInput):
    code = "corrupt_document"
    example = "the PDF file could not be read: no objects found"


class EncryptedDocument(InvalidInput):
    code = "encrypted_document"
    example = "the PDF is encrypted or password-protected: send an unencrypted copy"


class Unavailable(ServiceError):
    status, code = 503, "unavailable"
    example = "the OCR deployment is not part of this application"


class Overloaded(Unavailable):
    """Serve's queues are full or a deployment cannot take requests: retry shortly."""

    code = "overloaded"
    example = "the service is at capacity: retry shortly"


class ModelMissing(Unavailable):
    """A configured model's weights are not on this node."""

    code = "model_missing"
    example = "model 'bge-m3' is not at /models/bge-m3: run `ocr-graph models pull bge-m3`"


class BadGateway(ServiceError):
    status, code = 502, "bad_gateway"
    example = "source.url answered 500"


class UpstreamTimeout(ServiceError):
    status, code = 504, "upstream_timeout"
    example = "source.url did not arrive within 30.0 s"


def error_body(
    code: str, message: str, detail: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    """The single JSON error shape every route returns."""
    error: dict[str, Any] = {"code": code, "message": message, "detail": detail}
    if request_id:
        error["request_id"] = request_id
    return {"error": error}


def error_classes() -> list[type[ServiceError]]:
    """Every ServiceError subclass, parents before children (the OpenAPI error table)."""
    found, pending = [], list(ServiceError.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls.__module__ == __name__:  # the table must not depend on what else was imported
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def unwrap(exc: BaseException) -> BaseException:
    """The domain error inside a Ray task error, if there is one."""
    seen = 0
    while seen < 5 and not isinstance(exc, ServiceError):
        cause = getattr(exc, "cause", None) or exc.__cause__
        if cause is None:
            break
        exc, seen = cause, seen + 1
    return exc
