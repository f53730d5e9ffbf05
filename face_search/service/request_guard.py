"""The outermost layer of the web service: security headers on every answer, and the
requests refused before any routing.

Why outside the framework's app (an ASGI wrapper, not FastAPI middleware): FastAPI's own
500 answer is made by its outermost layer, so only a wrapper around the whole app puts the
headers on every answer there is. What it refuses are requests no route should see, which
the HTTP parser lets through: another HTTP version than 1.0/1.1 (505), a method the service
does not know (501), a request target or header block larger than the service accepts
(414, 431; the parser's own limit applies only to headers that arrive in pieces), and, on
a server listening on a loopback address, a Host header that names anything but loopback
(421: DNS rebinding, ``face_search.service.host_check``; not checked on other addresses).
"""

from __future__ import annotations


from starlette.types import ASGIApp, Message, Receive, Scope, Send

from face_search.service.host_check import loopback_host
from face_search.service.http_errors import problem_response
from face_search.service.web_api import ApiError

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS",
                           "TRACE", "CONNECT"})
MAX_TARGET_BYTES = 8192        # path and query of one request
MAX_HEADERS = 100              # header lines of one request
MAX_HEADER_BYTES = 16 * 1024   # all header names and values of one request


def refusal(scope: Scope, loopback_hosts_only: bool = False) -> ApiError | None:
    """Why a request must not reach the routes, or None; ``loopback_hosts_only``: refuse
    a Host header that does not name loopback (an HTTP/1.0 request without one passes)."""
    version = scope.get("http_version", "1.1")
    if version not in ("1.0", "1.1"):
        return ApiError(505, "http_version_not_supported",
                        f"HTTP/{version} is not supported; use HTTP/1.1")
    if scope["method"] not in KNOWN_METHODS:
        return ApiError(501, "not_implemented", f"unknown method {scope['method'][:20]!r}")
    target = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
    if target > MAX_TARGET_BYTES:
        return ApiError(414, "uri_too_long", f"the request target is {target:,} bytes, more "
                        f"than {MAX_TARGET_BYTES:,}")
    headers = scope.get("headers", [])
    size = sum(len(name) + len(value) for name, value in headers)
    if len(headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        return ApiError(431, "request_header_fields_too_large",
                        f"{len(headers)} headers of {size:,} bytes; at most {MAX_HEADERS} "
                        f"headers of {MAX_HEADER_BYTES:,} bytes are accepted")
    if loopback_hosts_only:
        for name, value in headers:
            if name.lower() == b"host" and not loopback_host(value.decode("latin-1")):
                return ApiError(421, "misdirected_request", "this service listens on a "
                                "loopback address and answers only requests for localhost, "
                                "127.0.0.1 or [::1], not for "
                                f"{value.decode('latin-1')[:100]!r}")
    return None


def security_headers(message: Message) -> None:
    """Add the security headers (where an answer sets none of its own) and ``Cache-Control:
    no-store`` to JSON answers that set no caching, to an ``http.response.start`` message."""
    present = {name.lower() for name, _ in message.get("headers", [])}
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1"))
             for name, value in SECURITY_HEADERS.items() if name.lower().encode() not in present]
    content_type = dict(message.get("headers", [])).get(b"content-type", b"")
    if content_type.startswith(b"application/json") and b"cache-control" not in present:
        extra.append((b"cache-control", b"no-store"))
    message["headers"] = list(message.get("headers", [])) + extra


class RequestGuard:
    """ASGI wrapper: :func:`refusal` before the app, HEAD as GET, :func:`security_headers`
    on every answer. ``loopback_hosts_only``: the server listens on a loopback address."""

    def __init__(self, app: ASGIApp, loopback_hosts_only: bool = False) -> None:
        self.app = app
        self.loopback_hosts_only = loopback_hosts_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                security_headers(message)
            await send(message)

        refused = refusal(scope, self.loopback_hosts_only)
        if refused is not None:
            await problem_response(refused)(scope, receive, send_secured)
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send_secured)
