"""The face search web service as an ASGI app (FastAPI): the page, its JSON API, the docs.

    GET  /                          the page (service/web/: index.html, app.js, style.css)
    GET  /api/info                  index size, code bits, model, limits
    POST /api/search[?top_k=N]      a photo (raw bytes, or the multipart form field "photo")
                                    -> photo preview, detected face (box, 32x32 PNG), its
                                    code, the top-k hits (face_search.service.web_api)
    GET  /api/gallery/<id>/face.png the 32x32 face of a gallery item, when its source has one
    GET  /docs, /openapi.json       the API described (Swagger UI, OpenAPI 3)

Why FastAPI: routing, method refusals, query validation, typed answers and the OpenAPI
description come from a maintained framework instead of our own code. What stays ours is
what the service promises beyond it: every refusal in one JSON shape
(``face_search.service.http_errors``), the upload limit checked before a body is read
(``face_search.service.uploads``), a bounded number of searches admitted at once, before
their bodies are read (``face_search.service.search_gate``), gallery faces that need a photo
prepared behind a small gate of their own, and the security headers and the Host check on
every request (``face_search.service.request_guard``). Static files are routes made from a
fixed list of names read at start-up (the page's and Swagger UI's), so no request path ever
reaches the file system. HEAD is answered as GET without the body (``RequestGuard``). The
service itself (``app.state.service``) may be set after the app is made: the server binds
its port before the model loads.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import anyio.to_thread
from fastapi import FastAPI, Query, Request
from starlette.responses import JSONResponse, Response

from face_search.service.api_models import Info, Problem, SearchAnswer
from face_search.service.docs_page import docs_assets, docs_page
from face_search.service.http_errors import install_error_handlers
from face_search.service.host_check import is_loopback
from face_search.service.request_guard import RequestGuard
from face_search.service.search_gate import SearchGate
from face_search.service.uploads import declared_length, photo_bytes, read_body
from face_search.service.web_api import MAX_TOP_K, SearchService

WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml"}
UPLOAD_IDLE_SECONDS = 10.0   # an upload silent this long is answered 408
SEARCH_WAIT_SECONDS = 10.0   # a search waits this long for a turn, then 503
# Gallery faces read from photos (a decode and a detection each) at once, and waiting:
# a result page asks for a dozen faces at once; more are refused (503) rather than queued.
GALLERY_FACES_AT_ONCE = 2
GALLERY_FACES_WAITING = 16
PHOTO_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["photo"], "properties": {
        "photo": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
REFUSALS: dict[int | str, dict[str, Any]] = {status: {"model": Problem, "description": words}
                                             for status, words in {
    400: "bad top_k, malformed form, no photo field, empty or incomplete body",
    408: "the upload stalled, or was too slow in all", 411: "no Content-Length (or chunked)",
    413: "larger than the upload limit (refused from its Content-Length; a form may add "
         "64 KiB to it, its photo may not)",
    415: "neither an image type nor a form",
    422: "not a readable image (not_an_image) or no face found (no_face)",
    503: "too many searches at once, refused before the body is read (busy; see "
         "Retry-After)"}.items()}
OTHER_REFUSALS: dict[int | str, dict[str, Any]] = {"4XX": {
    "model": Problem, "description": "any other refusal (404, 405, 414, 431, ...), same shape"}}


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


def _service(request: Request) -> SearchService:
    return request.app.state.service


def _file_endpoint(content: bytes, kind: str) -> Any:
    async def serve_file() -> Response:
        return Response(content, media_type=kind, headers={"Cache-Control": "no-cache"})
    return serve_file


def _add_static_routes(app: FastAPI) -> None:
    for path, (content, kind) in {**static_files(), **docs_assets()}.items():
        app.add_api_route(path, _file_endpoint(content, kind), methods=["GET"],
                          include_in_schema=False)


def _add_api_routes(app: FastAPI, gate: SearchGate, faces_gate: SearchGate,
                    upload_idle_seconds: float) -> None:
    @app.get("/api/info", response_model=Info, responses=OTHER_REFUSALS)
    async def info(request: Request) -> dict[str, Any]:
        """The index and the service's limits (what the page shows)."""
        return _service(request).info()

    @app.post("/api/search", response_model=SearchAnswer,
              responses={**REFUSALS, **OTHER_REFUSALS},
              openapi_extra={"requestBody": PHOTO_BODY})
    async def search(request: Request, top_k: Annotated[int | None, Query(
            ge=1, le=MAX_TOP_K, description="hits to return (default: the service's "
                                            "--top_k)")] = None) -> dict[str, Any]:
        """Search the gallery with the face of a photo: the photo's bytes as the body, or
        the file field `photo` of a multipart/form-data form."""
        service = _service(request)
        length = declared_length(request.headers, service.max_upload_bytes)
        with gate.admission():  # before a byte of the body: a refusal costs nothing
            body = await read_body(request.receive, length, upload_idle_seconds)
            photo = await photo_bytes(request.headers.get("content-type"), body,
                                      service.max_upload_bytes)
            del body  # a form's body: only its photo is kept while waiting
            return await gate.run(service.search_photo, photo, top_k)

    @app.get("/api/gallery/{gallery_id}/face.png", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "a 32x32 PNG"},
        404: {"model": Problem, "description": "no such item, or no face"},
        503: {"model": Problem, "description": "too many gallery photos being read at once "
                                               "(busy; see Retry-After)"},
        **OTHER_REFUSALS})
    async def gallery_face(request: Request, gallery_id: str) -> Response:
        """The 32x32 face of a gallery item, read back from its pickle row or photo."""
        service = _service(request)
        if service.gallery_png_needs_photo(gallery_id):  # a decode and a detection
            png = await faces_gate.run(service.gallery_png, gallery_id)
        else:  # cached, a pickle row, or a 404
            png = await anyio.to_thread.run_sync(service.gallery_png, gallery_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def _add_docs_routes(app: FastAPI) -> None:
    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return docs_page("/openapi.json", f"{app.title} - API")


def create_app(service: SearchService | None = None, max_concurrent_searches: int = 8,
               upload_idle_seconds: float = UPLOAD_IDLE_SECONDS,
               search_wait_seconds: float = SEARCH_WAIT_SECONDS, host: str = "127.0.0.1",
               gallery_faces_at_once: int = GALLERY_FACES_AT_ONCE,
               gallery_faces_waiting: int = GALLERY_FACES_WAITING) -> tuple[FastAPI, Any]:
    """(the FastAPI app, the ASGI app to serve: it wrapped in ``RequestGuard``).

    ``max_concurrent_searches`` run at once and as many more are admitted (uploading, or
    waiting up to ``search_wait_seconds`` for a turn); the rest are answered 503 at once,
    before their bodies are read. ``host``: the address the server's socket is bound to
    (``getsockname()``, not a name it was given; a loopback address: requests must name a
    loopback Host, see ``request_guard``). Gallery faces
    read from photos: ``gallery_faces_at_once`` at once, ``gallery_faces_waiting`` more
    waiting, then 503.
    """
    app = FastAPI(title="Face search", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, description="Search a gallery of faces with a photo: "
                  "every refusal is JSON {error, kind, status}.")
    app.state.service = service
    app.state.gate = SearchGate(max_concurrent_searches, max_concurrent_searches,
                                search_wait_seconds)
    app.state.faces_gate = SearchGate(gallery_faces_at_once, gallery_faces_waiting,
                                      search_wait_seconds, ("gallery face", "gallery faces"))
    install_error_handlers(app)
    _add_static_routes(app)
    _add_api_routes(app, app.state.gate, app.state.faces_gate, upload_idle_seconds)
    _add_docs_routes(app)
    return app, RequestGuard(app, loopback_hosts_only=is_loopback(host))
