"""The /docs page: Swagger UI for /openapi.json, served by the service itself.

Why its files come from the fastapi-offline package: FastAPI's own page loads Swagger UI
from a CDN, which a browser without internet access cannot reach and which the service's
security policy (scripts from the service only) would block. fastapi-offline ships the same
Swagger UI files in a wheel; they are read once at start-up and served under /docs/ like
the page's own files. The page's one inline script (FastAPI's start-up call) is allowed by
its SHA-256 in this page's policy, and nothing else inline.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re

from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse

from face_search.service.request_guard import SECURITY_HEADERS

ASSETS = {"/docs/swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "/docs/swagger-ui.css": "text/css; charset=utf-8",
          "/docs/favicon.png": "image/png"}


def docs_assets() -> dict[str, tuple[bytes, str]]:
    """URL path -> (content, content type) of Swagger UI's files."""
    folder = importlib.resources.files("fastapi_offline") / "static"
    return {path: ((folder / path.rsplit("/", 1)[1]).read_bytes(), kind)
            for path, kind in ASSETS.items()}


def docs_page(openapi_url: str, title: str) -> HTMLResponse:
    """The Swagger UI page for ``openapi_url``, with its Content-Security-Policy."""
    page = get_swagger_ui_html(openapi_url=openapi_url, title=title,
                               swagger_js_url="/docs/swagger-ui-bundle.js",
                               swagger_css_url="/docs/swagger-ui.css",
                               swagger_favicon_url="/docs/favicon.png")
    html = bytes(page.body).decode("utf-8")
    inline = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest())
                      .decode("ascii") + "'"
                      for script in re.findall(r"<script>(.*?)</script>", html, re.S))
    policy = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "script-src 'self'", f"script-src 'self' {inline}")
    return HTMLResponse(html, headers={"Content-Security-Policy": policy,
                                       "Cache-Control": "no-cache"})
