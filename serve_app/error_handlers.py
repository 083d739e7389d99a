"""Every failure becomes the one error body, with its status; and the OpenAPI error table.

Domain errors (`ServiceError` subclasses) carry their status; FastAPI's validation
errors become 422 naming each field; Serve's back-pressure and unavailable deployments
become 503 with Retry-After; anything else is a 500 with the request id, and a bug.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from serve_app.calls import RETRY_AFTER_S, UNAVAILABLE
from serve_app.kernel.errors import (
    Overloaded,
    ServiceError,
    error_body,
    error_classes,
    unwrap,
)
from serve_app.schemas import ErrorBody

logger = logging.getLogger("ray.serve")


def error_responses() -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of the app: per status, an example body of every error
    code it can carry, taken from the ServiceError classes themselves."""
    table: dict[int | str, dict[str, Any]] = {}
    for cls in error_classes():
        entry = table.setdefault(cls.status, {
            "description": cls.example, "model": ErrorBody,
            "content": {"application/json": {"examples": {}}}})
        entry["content"]["application/json"]["examples"][cls.code] = {
            "summary": cls.example, "value": error_body(cls.code, cls.example)}
    return dict(sorted(table.items(), key=lambda item: str(item[0])))


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request: Request, status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body["error"]["request_id"] = request_id(request)
    return JSONResponse(body, status_code=status, headers=headers)


def field_errors(errors: Any, prefix: str = "") -> tuple[str, list[dict[str, str]]]:
    """Pydantic errors as [{"field", "message"}] and a one-line summary of the first five."""
    fields = [{"field": prefix + ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
              for err in errors]
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5]), fields


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(request, exc.status, exc.body(), exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    summary, fields = field_errors(exc.errors())
    return error_response(request, 422, error_body("invalid_input",
                                                   f"invalid request: {summary}", fields))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, ServiceError):  # FastAPI wraps errors of body reading in 400
        return await service_error(request, exc.__cause__)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, error_body(code, str(exc.detail)),
                          getattr(exc, "headers", None))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    cause = unwrap(exc)
    if isinstance(cause, ServiceError):
        return await service_error(request, cause)
    if isinstance(cause, UNAVAILABLE):  # a call made outside serve_app/calls.answer
        overloaded = Overloaded(Overloaded.example,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return await service_error(request, overloaded)
    logger.exception("unhandled error in request %s", request_id(request))
    return error_response(request, 500, ServiceError(ServiceError.example).body())


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(ServiceError, service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
