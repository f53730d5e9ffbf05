"""What the search service answers, apart from HTTP: info, searches of uploads, gallery faces.

Why apart from the server: every answer here is a plain dict (or PNG bytes) or an
:class:`ApiError` carrying the HTTP status, a short ``kind`` and a message for a person,
so the rules (what is a bad upload, what a search returns) are tested without sockets and
the server only moves bytes. A search answer holds everything the page shows: the photo
(a small JPEG preview, its size), the detected face (box in the photo's pixels, the 32x32
crop as a PNG data URL), its code as a string of bits, and the top-k hits.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from face_search.errors import UnknownIdError
from face_search.gallery_faces import GalleryFaces, png_bytes
from face_search.multipart import MultipartError, parse_form
from face_search.searcher import FaceSearcher

MAX_TOP_K = 1000           # hits one request may ask for
PREVIEW_SIDE = 640         # the photo preview's longer side, pixels
UPLOAD_FIELD = "photo"     # the form field of a multipart upload
RAW_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    """An answer other than 200: ``status`` (HTTP), ``kind`` (for programs), message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "kind": self.kind, "status": self.status}


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def bit_string(packed: np.ndarray, num_bits: int) -> str:
    """A packed code (LSB first, ``face_search.codes``) as '0'/'1', bit 0 first
    (bit b is 1 where the model's code b is +1)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[:num_bits]
    return "".join("1" if b else "0" for b in bits.tolist())


def preview_jpeg(image: np.ndarray, side: int = PREVIEW_SIDE) -> bytes:
    """The photo shrunk to at most ``side`` pixels on its longer side, as JPEG bytes."""
    picture = Image.fromarray(image, "RGB")
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()


def upload_bytes(content_type: str | None, body: bytes) -> bytes:
    """The photo's bytes from a request body: raw bytes, or the form field ``photo``.

    Raises:
        ApiError: 400 (empty, malformed form, no photo field), 415 (another content type).
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "multipart/form-data":
        try:
            parts = parse_form(content_type or "", body)
        except MultipartError as exc:
            raise ApiError(400, "bad_form", f"malformed multipart/form-data upload: {exc}") \
                from None
        photo = next((p for p in parts if p.name == UPLOAD_FIELD), None)
        if photo is None:
            raise ApiError(400, "no_photo", f"the form has no field {UPLOAD_FIELD!r} (send the "
                           "photo as the file field 'photo')")
        if not photo.data:
            raise ApiError(400, "no_photo", "the uploaded file is empty (was a file chosen?)")
        return photo.data
    if mime and not mime.startswith(RAW_TYPES):
        raise ApiError(415, "unsupported_media_type",
                       f"cannot search a {mime} body: send the photo's bytes (image/* or "
                       "application/octet-stream) or a multipart/form-data form with the "
                       f"file field {UPLOAD_FIELD!r}")
    if not body:
        raise ApiError(400, "no_photo", "empty request body: send a photo")
    return body


class SearchService:
    """A loaded searcher answering the service's requests (thread-safe).

    Args:
        searcher: the index and its model (and the face preparer photos go through).
        top_k: hits per search unless a request asks for another number.
        max_upload_bytes: the largest request body accepted (the server enforces it).
        max_parallel: searches decoding and encoding at once; more wait their turn (a
            50-megapixel photo takes 150 MB decoded).
        wait_seconds: how long a search waits for its turn before a 503.
        preparer: a ``common.faces.FacePreparer`` for uploads (default the searcher's).
    """

    def __init__(self, searcher: FaceSearcher, top_k: int = 10,
                 max_upload_bytes: int = 10 * 2**20, max_parallel: int = 2,
                 wait_seconds: float = 60.0, preparer: Any = None) -> None:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
        self.searcher = searcher
        self.top_k = int(top_k)
        self.max_upload_bytes = int(max_upload_bytes)
        self.wait_seconds = float(wait_seconds)
        self._turns = threading.BoundedSemaphore(max_parallel)
        self.preparer = preparer or searcher.preparer  # now: a missing detector fails here
        self.faces = GalleryFaces(searcher.index, lambda: self.preparer)
        self._identities = len(searcher.index.identity_counts())

    def info(self) -> dict[str, Any]:
        """What the page shows about the index and the service's limits."""
        index = self.searcher.index
        model = index.model or {}
        return {"count": len(index), "identities": self._identities, "num_bits": index.num_bits,
                "kind": index.kind, "detector": self.preparer.method, "top_k": self.top_k,
                "max_top_k": MAX_TOP_K, "max_upload_bytes": self.max_upload_bytes,
                "model": {k: model.get(k) for k in ("path", "kind", "method", "checkpoint",
                                                    "epoch", "num_bits")}}

    def top_k_of(self, text: str | None) -> int:
        """The ``top_k`` query parameter (default the service's), checked."""
        if text is None:
            return self.top_k
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
            raise ApiError(400, "bad_top_k", f"top_k must be an integer in 1..{MAX_TOP_K}, "
                           f"got {text[:20]!r}")
        return int(text)

    def search_upload(self, content_type: str | None, body: bytes,
                      top_k: int | None = None) -> dict[str, Any]:
        """Search the face of an uploaded photo (see the module docstring for the answer).

        Raises:
            ApiError: 400/415 (see :func:`upload_bytes`), 422 (not a usable image, or no
                face found), 503 (too many searches waiting).
        """
        photo = upload_bytes(content_type, body)
        if not self._turns.acquire(timeout=self.wait_seconds):
            raise ApiError(503, "busy", "too many searches at once; try again shortly")
        try:
            return self._search(photo, top_k or self.top_k)
        finally:
            self._turns.release()

    def _search(self, photo: bytes, top_k: int) -> dict[str, Any]:
        from common.faces import FaceNotFoundError, ImageReadError, read_image

        start = time.perf_counter()
        try:
            image = read_image(photo, self.preparer.max_pixels)
        except ImageReadError as exc:
            raise ApiError(422, "not_an_image", str(exc)) from None
        try:
            prepared = self.preparer.prepare(image, "the uploaded photo")
        except FaceNotFoundError:
            raise ApiError(422, "no_face", f"no face found in the uploaded photo (detector "
                           f"{self.preparer.method}); try one where the face is large, "
                           "frontal and well lit") from None
        except ValueError as exc:
            raise ApiError(422, "not_an_image", str(exc)) from None
        face = np.asarray(prepared.face)
        result = self.searcher.search_faces(face[None], top_k, sources=["uploaded photo"])[0]
        num_bits = self.searcher.index.num_bits
        hits = [dict(rank=rank, **hit.to_dict(),
                     thumbnail=(f"/api/gallery/{hit.gallery_id}/face.png"
                                if self.faces.has_face(hit.source) else None))
                for rank, hit in enumerate(result.hits, 1)]
        return {"photo": {"width": int(image.shape[1]), "height": int(image.shape[0]),
                          "preview": data_url(preview_jpeg(image), "image/jpeg")},
                "face": {"box": [int(v) for v in prepared.box] if prepared.box else None,
                         "image": data_url(png_bytes(face), "image/png"),
                         "detector": prepared.method, "faces_found": prepared.faces_found,
                         "note": prepared.note},
                "code": {"bits": bit_string(result.code, num_bits), "num_bits": num_bits},
                "top_k": top_k, "gallery_size": len(self.searcher.index), "hits": hits,
                "seconds": round(time.perf_counter() - start, 4)}

    def gallery_png(self, gallery_id_text: str) -> bytes:
        """The 32x32 face of a gallery item as PNG.

        Raises:
            ApiError: 404 for an id that is not an integer or not in the index, or an item
                whose source gives no face.
        """
        if not gallery_id_text.isascii() or not gallery_id_text.isdigit() \
                or len(gallery_id_text) > 19:
            raise ApiError(404, "not_found", f"no gallery item {gallery_id_text[:30]!r}")
        try:
            data = self.faces.png(int(gallery_id_text))
        except UnknownIdError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        if data is None:
            raise ApiError(404, "no_face_image", f"gallery item {gallery_id_text} has no face "
                           "image (its source is not a readable pickle row or photo)")
        return data
