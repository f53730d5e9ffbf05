"""The face search web service: a page to search a gallery with a photo, and its JSON API.

    GET  /                          the page (face_search/web/: index.html, app.js, style.css)
    GET  /api/info                  index size, code bits, model, limits
    POST /api/search[?top_k=N]      a photo (raw bytes, or the multipart form field "photo")
                                    -> photo preview, detected face (box, 32x32 PNG), its
                                    code, the top-k hits (face_search.web_api)
    GET  /api/gallery/<id>/face.png the 32x32 face of a gallery item, when its source has one

Why the standard library's ``ThreadingHTTPServer``: one process serving one index on one
machine needs routing for five paths and a body limit, which it does in a page of code
with no dependency to keep up; a request that takes long (a large photo) does not hold up
the others. Every answer that is not a file is JSON, errors too: ``{"error", "kind",
"status"}``, including the ones the standard library raises itself (a malformed request
line, headers too long or too many). Uploads larger than the limit are refused from their
Content-Length (413) before a byte of them is read. Static files are served from a fixed
list of names read at start-up, so no request path ever reaches the file system.

It binds to 127.0.0.1 by default: anyone who can reach the port can search the gallery.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from face_search.errors import SearchInputError
from face_search.web_api import ApiError, SearchService

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data: blob:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SOCKET_TIMEOUT = 60.0  # seconds a connection may stay silent (a stalled upload included)
LINGER_SECONDS = 2.0   # after refusing a body: how long its rest is read and dropped
LINGER_BYTES = 64 * 2**20
GALLERY_PREFIX, GALLERY_SUFFIX = "/api/gallery/", "/face.png"


def static_files(folder: str = WEB_DIR) -> dict[str, tuple[bytes, str]]:
    """URL path -> (content, content type) for every servable file of ``folder``."""
    files = {}
    for name in sorted(os.listdir(folder)):
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1])
        path = os.path.join(folder, name)
        if kind and os.path.isfile(path):
            with open(path, "rb") as f:
                files["/" + name] = (f.read(), kind)
    files["/"] = files["/index.html"]
    return files


class SearchHandler(BaseHTTPRequestHandler):
    """One connection's requests. ``server.service`` and ``server.files`` hold the state."""

    server_version = "face-search"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # keep-alive: a result page loads its faces on one connection
    timeout = SOCKET_TIMEOUT

    # ------------------------------------------------------------------ answers
    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: dict[str, Any],
                   headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8",
                   {"Cache-Control": "no-store", **(headers or {})})

    def _send_problem(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        self._send_json(error.status, error.to_dict(), headers)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The standard library's errors (bad request line, headers too long or too many,
        unknown method) as JSON, and the connection closed after them."""
        self.log_error("code %d, message %s", code, message)
        self._leave_body_unread()
        if self.request_version == "HTTP/0.9":  # a garbled request line: answer with a status
            self.request_version = "HTTP/1.0"
        phrase = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"
        kind = phrase.lower().replace(" ", "_").replace("-", "_")
        text = message or phrase
        if explain and explain != message:
            text = f"{text} ({explain})"
        self._send_problem(ApiError(code, kind, text))

    def _not_allowed(self, allowed: str) -> None:
        self._send_problem(ApiError(405, "method_not_allowed",
                                    f"{self.command} is not allowed on this path (allowed: "
                                    f"{allowed})"), {"Allow": allowed})

    # ------------------------------------------------------------------ routing
    def handle_one_request(self) -> None:
        """The standard library's, quiet when the client went away before the answer."""
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
        self._guard(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guard(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guard(self._post)

    def _other(self) -> None:
        self._guard(lambda: self._not_allowed(self._allowed(urlsplit(self.path).path)))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    @staticmethod
    def _allowed(path: str) -> str:
        return "POST" if path == "/api/search" else "GET, HEAD"

    def _guard(self, work) -> None:
        """``work()``, with any failure answered (500 for a bug, nothing for a client
        that went away) so that the server goes on."""
        try:
            work()
        except ApiError as exc:
            self._send_problem(exc)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - one request must never stop the service
            self.log_error("internal error: %s: %s", type(exc).__name__, exc)
            self.close_connection = True
            try:
                self._send_problem(ApiError(500, "internal_error",
                                            f"internal error: {type(exc).__name__}"))
            except OSError:
                pass

    def _get(self) -> None:
        path = urlsplit(self.path).path
        service: SearchService = self.server.service  # type: ignore[attr-defined]
        if path in self.server.files:  # type: ignore[attr-defined]
            content, kind = self.server.files[path]  # type: ignore[attr-defined]
            self._send(200, content, kind, {"Cache-Control": "no-cache"})
        elif path == "/api/info":
            self._send_json(200, service.info())
        elif path.startswith(GALLERY_PREFIX) and path.endswith(GALLERY_SUFFIX):
            gallery_id = path[len(GALLERY_PREFIX):-len(GALLERY_SUFFIX)]
            self._send(200, service.gallery_png(gallery_id), "image/png",
                       {"Cache-Control": "max-age=3600"})
        elif path == "/api/search":
            self._not_allowed("POST")
        else:
            raise ApiError(404, "not_found", f"nothing at {path[:200]}")

    def _post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/search":
            self._leave_body_unread()
            if url.path in self.server.files or url.path.startswith("/api/"):  # type: ignore
                return self._not_allowed(self._allowed(url.path))
            raise ApiError(404, "not_found", f"nothing at {url.path[:200]}")
        service: SearchService = self.server.service  # type: ignore[attr-defined]
        body = self._read_body(service.max_upload_bytes)  # first: the connection stays usable
        try:
            query = parse_qs(url.query, max_num_fields=8)
        except ValueError:
            raise ApiError(400, "bad_query", "too many query parameters") from None
        top_k = service.top_k_of(query["top_k"][0] if "top_k" in query else None)
        self._send_json(200, service.search_upload(self.headers.get("Content-Type"), body,
                                                   top_k))

    def _read_body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes, refused from its declared length."""
        if self.headers.get("Transfer-Encoding"):
            self._leave_body_unread()
            raise ApiError(411, "length_required", "send the upload with a Content-Length "
                           "(chunked transfer encoding is not accepted)")
        declared = self.headers.get("Content-Length")
        if declared is None:
            self._leave_body_unread()
            raise ApiError(411, "length_required", "a POST needs a Content-Length header")
        if not declared.strip().isdigit() or not declared.strip().isascii():
            self._leave_body_unread()
            raise ApiError(400, "bad_content_length", f"bad Content-Length {declared[:30]!r}")
        length = int(declared)
        if length > limit:
            self._leave_body_unread()  # not a byte of it is kept
            raise ApiError(413, "too_large", f"the upload is {length:,} bytes, more than this "
                           f"service's limit of {limit:,} bytes ({limit / 2**20:g} MB)")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise ApiError(400, "incomplete_body", f"the connection ended after {len(body):,} "
                           f"of the {length:,} bytes announced")
        return body

    def _leave_body_unread(self) -> None:
        """Answer, then close the connection without reading the body (see finish)."""
        self.close_connection = True
        self._linger = True

    def finish(self) -> None:
        """Close; after an answer that left a body unread, first signal the end of the
        answer and discard what the client still sends (for at most ``LINGER_SECONDS``
        and ``LINGER_BYTES``): closing a socket with unread data resets the connection,
        and the client would see a network error instead of the answer (a 413)."""
        super().finish()
        if not getattr(self, "_linger", False):
            return
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            drained = 0
            while drained < LINGER_BYTES and time.monotonic() < deadline:
                self.connection.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    # ------------------------------------------------------------------ logging
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        if getattr(self.server, "quiet", False):
            return
        from common.cli.runner import one_line
        sys.stderr.write(one_line(f"{self.address_string()} - {format % args}") + "\n")


class SearchServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the service, the static files and the log switch."""

    daemon_threads = True  # a stalled connection never keeps the process alive

    def __init__(self, address: tuple[str, int], service: SearchService | None,
                 quiet: bool = False) -> None:
        self.service = service
        self.files = static_files()
        self.quiet = quiet
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, SearchHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"


def make_server(service: SearchService | None, host: str = "127.0.0.1", port: int = 8080,
                quiet: bool = False) -> SearchServer:
    """A bound, not yet serving server (``port=0``: any free port; see ``.url``); a
    ``service`` of None must be set as ``.service`` before serving."""
    return SearchServer((host, port), service, quiet)


def serve_in_thread(server: SearchServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread (tests, notebooks); stop it with
    ``server.shutdown(); server.server_close()``."""
    thread = threading.Thread(target=server.serve_forever, name="face-search-server",
                              daemon=True)
    thread.start()
    return thread


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(index_dir: str, model: str | None = None, checkpoint: str | None = None,
          detector: str = "auto", host: str = "127.0.0.1", port: int = 8080,
          max_upload_bytes: int = 10 * 2**20, top_k: int = 10) -> None:
    """Load the index and its model, then answer requests until Ctrl-C or SIGTERM (a
    normal stop: returns). ``python -m face_search serve`` calls this.

    Raises:
        SearchInputError: the address cannot be listened on (port taken, unknown host);
            the index, model and detector errors of FaceSearcher and FacePreparer.
    """
    from common.faces import FacePreparer
    from face_search.searcher import FaceSearcher

    try:  # first, so that a taken port fails before the model loads
        server = make_server(None, host, port)
    except OSError as exc:
        raise SearchInputError(f"cannot listen on {host}:{port}: "
                               f"{exc.strerror or exc}") from None
    try:
        searcher = FaceSearcher(index_dir, model, checkpoint)  # the index first: quick
        server.service = SearchService(searcher, top_k, max_upload_bytes,
                                       preparer=FacePreparer(detector))
    except BaseException:
        server.server_close()
        raise
    info = server.service.info()
    print(f"serving {info['count']:,} faces of {info['identities']:,} identities "
          f"({info['num_bits']}-bit codes, detector {info['detector']}) from "
          f"{searcher.index_dir} at {server.url} (Ctrl-C to stop)", flush=True)
    if not _loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this address can search "
              "the gallery and see its faces", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
