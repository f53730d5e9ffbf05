"""A search upload over HTTP: its length checked before a byte is read, its body read with
timeouts, and the photo taken out of it (raw bytes, or the form field ``photo``).

Why in this order: a body over the limit is refused (413) from its Content-Length alone,
so it costs neither memory nor time; a client that stops sending half way is answered
(408) after ``idle_seconds`` instead of holding its request open for ever, and so is one
that trickles its body slower than :data:`MIN_BYTES_PER_SECOND` (a total deadline, never
under :data:`MIN_UPLOAD_SECONDS`), since an upload holds memory and one of the search
gate's admissions; only a whole body is parsed. The limit is the photo's: a form may add
:data:`FORM_FRAMING_BYTES` of boundaries, part headers and small fields, and the file part
itself is then held to the limit, so that a photo of exactly the limit is accepted both
ways, as the page promises. Forms are parsed by python-multipart (through Starlette's
parser), bounded in files, fields, field size and (python-multipart's own bounds) header
lines per part and bytes per header line.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

import anyio
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Receive

from face_search.service.web_api import ApiError

UPLOAD_FIELD = "photo"       # the form field of a multipart upload
RAW_TYPES = ("image/", "application/octet-stream")
MAX_FILES = 1                # file parts of a form: the photo
MAX_FIELDS = 15              # other parts (text fields a form may carry along)
MAX_FIELD_BYTES = 64 * 1024  # one text field
FORM_FRAMING_BYTES = 64 * 1024  # a form's body beyond its photo: boundaries, headers, fields
MIN_BYTES_PER_SECOND = 64 * 1024  # an upload slower than this on average is answered 408
MIN_UPLOAD_SECONDS = 30.0    # ... but every upload may take this long


def is_form(content_type: str | None) -> bool:
    """Whether a Content-Type is multipart/form-data."""
    return (content_type or "").split(";", 1)[0].strip().lower() == "multipart/form-data"


def upload_seconds(length: int) -> float:
    """How long an upload of ``length`` bytes may take in all."""
    return max(MIN_UPLOAD_SECONDS, length / MIN_BYTES_PER_SECOND)


def declared_length(headers: Mapping[str, str], limit: int) -> int:
    """The length a POST's headers declare, checked before any of the body is read against
    ``limit`` (bytes), plus :data:`FORM_FRAMING_BYTES` for a form. (Two different
    Content-Length headers, or one that is not a number, never get here: the HTTP parser
    refuses them with a 400.)

    Raises:
        ApiError: 411 (chunked, or no Content-Length), 413 (more than allowed).
    """
    if "transfer-encoding" in headers:
        raise ApiError(411, "length_required", "send the upload with a Content-Length "
                       "(chunked transfer encoding is not accepted)")
    declared = headers.get("content-length")
    if declared is None:
        raise ApiError(411, "length_required", "a POST needs a Content-Length header")
    length = int(declared)
    form = is_form(headers.get("content-type"))
    if form and length > limit + FORM_FRAMING_BYTES:
        raise ApiError(413, "too_large", f"the form is {length:,} bytes, more than this "
                       f"service's limit of {limit:,} bytes ({limit / 2**20:g} MB) for the "
                       f"photo and {FORM_FRAMING_BYTES:,} for the rest of the form")
    if not form and length > limit:
        raise ApiError(413, "too_large", f"the upload is {length:,} bytes, more than this "
                       f"service's limit of {limit:,} bytes ({limit / 2**20:g} MB)")
    return length


async def read_body(receive: Receive, length: int, idle_seconds: float,
                    total_seconds: float | None = None) -> bytes:
    """The ``length`` bytes of a request body from its ASGI ``receive``, within
    ``total_seconds`` in all (default :func:`upload_seconds`).

    Raises:
        ApiError: 408 ``upload_timeout`` (no data for ``idle_seconds``, or the body not
            whole after ``total_seconds``; the connection is closed after the answer),
            400 ``incomplete_body`` (the client ended the body early).
    """
    total = upload_seconds(length) if total_seconds is None else total_seconds
    deadline = anyio.current_time() + total
    body = bytearray()
    while True:
        left = deadline - anyio.current_time()
        with anyio.move_on_after(min(idle_seconds, max(left, 0.0))) as waited:
            message = await receive()
        if waited.cancelled_caught:
            if left <= idle_seconds:
                raise ApiError(408, "upload_timeout", f"the upload is too slow: "
                               f"{len(body):,} of its {length:,} bytes arrived in {total:g} s "
                               f"(send at least {MIN_BYTES_PER_SECOND // 1024} KB/s)",
                               {"Connection": "close"})
            raise ApiError(408, "upload_timeout", f"the upload stalled: nothing arrived for "
                           f"{idle_seconds:g} s after {len(body):,} of its {length:,} bytes",
                           {"Connection": "close"})
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if len(body) != length:
        raise ApiError(400, "incomplete_body", f"the connection ended after {len(body):,} of "
                       f"the {length:,} bytes announced")
    return bytes(body)


async def photo_bytes(content_type: str | None, body: bytes, limit: int) -> bytes:
    """The photo's bytes in a request body: the body itself (``image/*``,
    ``application/octet-stream`` or no type), or the file field ``photo`` of a form, at
    most ``limit`` bytes.

    Raises:
        ApiError: 400 (empty, malformed form, no photo field), 413 (a form's photo larger
            than ``limit``), 415 (another content type).
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if is_form(content_type):
        photo = await _form_photo(content_type or "", body)
        if len(photo) > limit:
            raise ApiError(413, "too_large", f"the photo is {len(photo):,} bytes, more than "
                           f"this service's limit of {limit:,} bytes ({limit / 2**20:g} MB)")
        return photo
    if mime and not mime.startswith(RAW_TYPES):
        raise ApiError(415, "unsupported_media_type",
                       f"cannot search a {mime} body: send the photo's bytes (image/* or "
                       "application/octet-stream) or a multipart/form-data form with the "
                       f"file field {UPLOAD_FIELD!r}")
    if not body:
        raise ApiError(400, "no_photo", "empty request body: send a photo")
    return body


def bad_form(reason: str) -> ApiError:
    return ApiError(400, "bad_form", f"malformed multipart/form-data upload: {reason}")


def _closed(body: bytes, boundary: bytes) -> bool:
    """Whether the form ends with its closing delimiter (python-multipart takes a form cut
    short, a truncated upload, for a complete one with fewer parts)."""
    close = b"--" + boundary + b"--"
    return body.startswith(close) or b"\r\n" + close in body


async def _form_photo(content_type: str, body: bytes) -> bytes:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(Headers({"content-type": content_type}), chunks(),
                             max_files=MAX_FILES, max_fields=MAX_FIELDS,
                             max_part_size=MAX_FIELD_BYTES)
    parser.spool_max_size = len(body) + 1  # the body is in memory already: no temporary file
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise bad_form(f"{exc.message}{cause}") from None
    try:
        if not _closed(body, parse_options_header(content_type)[1][b"boundary"]):
            raise bad_form("it ends without its closing boundary (a truncated upload?)")
        photo = form.get(UPLOAD_FIELD)
        if photo is None:
            raise ApiError(400, "no_photo", f"the form has no field {UPLOAD_FIELD!r} (send the "
                           "photo as the file field 'photo')")
        if isinstance(photo, str) and photo:
            raise ApiError(400, "no_photo", f"the form field {UPLOAD_FIELD!r} is text, not a "
                           "file: send the photo as a file part (with a filename)")
        data = await photo.read() if isinstance(photo, UploadFile) else b""
        if not data:
            raise ApiError(400, "no_photo", "the uploaded file is empty (was a file chosen?)")
        return data
    finally:
        await form.close()
