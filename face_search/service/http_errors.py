"""Every refusal of the web service as JSON ``{"error", "kind", "status"}``, whoever refuses.

Why one module: refusals come from four places — the service (:class:`ApiError`), the
framework's router (404, 405), FastAPI's parameter validation (a bad ``top_k``) and the
HTTP parser below the framework (``face_search.service.http_protocol``) — and a client reading
``kind`` must not care which one answered. The framework's own shapes (``{"detail": ...}``,
plain-text errors) never reach a client.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from face_search.service.web_api import ApiError

METHOD_ORDER = ("GET", "HEAD", "POST")  # the order of an Allow header


def kind_of(status: int) -> str:
    """A status's reason phrase as a ``kind``: 431 -> ``request_header_fields_too_large``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def problem_bytes(error: ApiError) -> bytes:
    """The JSON body of a refusal, for code below the framework."""
    return json.dumps(error.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()


def problem_response(error: ApiError) -> JSONResponse:
    """A refusal as the framework's response, with the headers it needs."""
    return JSONResponse(error.to_dict(), error.status, headers=error.headers)


def _allowed(header: str) -> str:
    """The router's Allow list in a fixed order, HEAD wherever GET is (see RequestGuard)."""
    methods = {m.strip() for m in header.split(",") if m.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods, key=lambda m: (METHOD_ORDER + (m,)).index(m)))


def _http_error(request: Request, exc: HTTPException) -> ApiError:
    """The router's refusals (and any other ``HTTPException``) in the service's words."""
    if exc.status_code == 404:
        return ApiError(404, "not_found", f"nothing at {request.url.path[:200]}")
    if exc.status_code == 405:
        allowed = _allowed((exc.headers or {}).get("Allow", ""))
        return ApiError(405, "method_not_allowed", f"{request.method} is not allowed on this "
                        f"path (allowed: {allowed})", {"Allow": allowed})
    return ApiError(exc.status_code, kind_of(exc.status_code), str(exc.detail),
                    dict(exc.headers or {}))


def _validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's parameter validation (a query parameter of the wrong type or range) as a
    400 named after the first bad parameter: ``bad_top_k``."""
    errors: list[dict[str, Any]] = list(exc.errors())
    name = str(errors[0]["loc"][-1]) if errors and errors[0].get("loc") else "request"
    words = "; ".join(f"{e.get('msg', 'invalid')}"
                      + (f", got {e['input']!r}" if "input" in e else "") for e in errors)
    return ApiError(400, f"bad_{name}", f"{name}: {words}"[:500])


def install_error_handlers(app: FastAPI) -> None:
    """Answer ``ApiError``, the router's ``HTTPException`` and validation errors as JSON;
    a bug as a 500 ``internal_error`` (the traceback goes to the log, not to the client)."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return problem_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return problem_response(_http_error(request, exc))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_error(exc))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(ApiError(500, "internal_error",
                                         f"internal error: {type(exc).__name__}"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
