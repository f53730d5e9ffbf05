"""A strict reader of ``multipart/form-data`` request bodies (what a browser's upload sends).

Why our own: the standard library's ``cgi`` module is deprecated (removed in Python
3.13) and ``email``'s parser accepts anything, reporting defects on the side; an upload
endpoint needs the opposite: a body read as RFC 7578 says or refused with a reason the
client can act on. The whole body is already in memory (its size was checked against the
upload limit first), so this is plain splitting on the boundary, with bounds on the
number of parts and on each part's header size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 8192
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")  # RFC 2046 bchars


class MultipartError(ValueError):
    """A body that is not well-formed ``multipart/form-data``."""


@dataclass(frozen=True)
class FormPart:
    """One field of a form: its name, the file name the browser sent (if a file), the
    part's own content type, and its bytes."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def _header_param(header_name: str, value: str, param: str) -> str | None:
    message = Message()
    message[header_name] = value
    found = message.get_param(param, header=header_name)
    if found is None:
        return None
    return str(collapse_rfc2231_value(found))


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type header value.

    Raises:
        MultipartError: another type, or no valid boundary.
    """
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {message.get_content_type()}")
    boundary = _header_param("Content-Type", content_type, "boundary")
    if not boundary or not _BOUNDARY.match(boundary) or boundary.endswith(" "):
        raise MultipartError("multipart/form-data without a valid boundary parameter")
    return boundary


def _parse_part(raw: bytes, number: int) -> FormPart:
    if raw.startswith(b"\r\n"):
        raise MultipartError(f"part {number} has no headers (no Content-Disposition)")
    head, sep, data = raw.partition(b"\r\n\r\n")
    if not sep:
        raise MultipartError(f"part {number}: headers not ended by an empty line")
    if len(head) > MAX_PART_HEADER_BYTES:
        raise MultipartError(f"part {number}: headers longer than {MAX_PART_HEADER_BYTES} bytes")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise MultipartError(f"part {number}: malformed header line")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("utf-8", "replace")
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise MultipartError(f"part {number} has no Content-Disposition header")
    if disposition.split(";", 1)[0].strip().lower() != "form-data":
        raise MultipartError(f"part {number}: Content-Disposition is not form-data")
    name = _header_param("Content-Disposition", disposition, "name")
    if name is None:
        raise MultipartError(f"part {number}: Content-Disposition has no name")
    filename = _header_param("Content-Disposition", disposition, "filename")
    content_type = headers.get("content-type", "text/plain").split(";", 1)[0].strip().lower()
    return FormPart(name, filename, content_type, data)


def parse_form(content_type: str, body: bytes) -> list[FormPart]:
    """The parts of a ``multipart/form-data`` body, in order.

    Raises:
        MultipartError: no valid boundary, no opening or closing delimiter, more than
            ``MAX_PARTS`` parts, or a part without a form-data Content-Disposition.
    """
    boundary = boundary_of(content_type).encode("ascii")
    delimiter = b"\r\n--" + boundary
    pieces = (b"\r\n" + body).split(delimiter)  # pieces[0]: the preamble, ignored
    if len(pieces) < 2:
        raise MultipartError("the body holds no part delimited by the declared boundary")
    if not pieces[-1].startswith(b"--"):
        raise MultipartError("the body ends without the closing boundary (truncated upload?)")
    if len(pieces) - 2 > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS} parts")
    parts = []
    for number, piece in enumerate(pieces[1:-1], 1):
        if piece.startswith(b"--"):
            raise MultipartError(f"closing boundary before part {number}")
        padding, newline, raw = piece.partition(b"\r\n")
        if not newline or padding.strip(b" \t"):
            raise MultipartError(f"part {number}: boundary line not followed by a line break")
        parts.append(_parse_part(raw, number))
    return parts
