"""What the search service answers, apart from HTTP: info, searches of photos, gallery faces.

Why apart from the web app: every answer here is a plain dict (or PNG bytes) or an
:class:`ApiError` carrying the HTTP status, a short ``kind`` and a message for a person,
so the rules (what a search returns, which photo is unusable) are tested without sockets
and the web layer (``face_search.service.web_app``) only reads requests and moves bytes. A search
answer holds everything the page shows: the photo (a small JPEG preview, its size), the
detected face (box in the photo's pixels, the 32x32 crop as a PNG data URL), its code as a
string of bits, and the top-k hits.

Faces are cut as the index records its photos were (``face_search.searcher``): an upload
unless the service was given another preparer (then with a warning, logged at start), and
a gallery item's face (its thumbnail) always as the index records, so that it shows the
face that was coded.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
from PIL import Image

from absl import logging

from face_search import inputs
from face_search.errors import UnknownIdError
from face_search.service.gallery_faces import GalleryFaces, png_bytes
from face_search.searcher import FaceSearcher

MAX_TOP_K = 1000           # hits one request may ask for
PREVIEW_SIDE = 640         # the photo preview's longer side, pixels


class ApiError(Exception):
    """An answer other than 200: ``status`` (HTTP), ``kind`` (for programs), message, and
    the HTTP headers it needs (``Allow`` of a 405, ``Retry-After`` of a 503)."""

    def __init__(self, status: int, kind: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "kind": self.kind, "status": self.status}


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def bit_string(packed: np.ndarray, num_bits: int) -> str:
    """A packed code (LSB first, ``face_search.index.codes``) as '0'/'1', bit 0 first
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


def _gallery_id_text(text: str) -> bool:
    """Whether a URL's gallery id is a non-negative integer of at most 19 digits."""
    return text.isascii() and text.isdigit() and len(text) <= 19


class SearchService:
    """A loaded searcher answering the service's requests (thread-safe).

    Args:
        searcher: the index and its model (and the face preparer photos go through).
        top_k: hits per search unless a request asks for another number.
        max_upload_bytes: the largest photo accepted (the web app enforces it; a form may
            add ``FORM_FRAMING_BYTES`` of framing).
        preparer: a ``common.faces.FacePreparer`` or a detector name for uploads (default
            the searcher's); one that cuts faces otherwise than the index records is used,
            with a warning logged (``preparation_warning``).

    How many searches run at once is the web app's business (``face_search.service.search_gate``):
    a call here decodes, detects, encodes and searches, in the calling thread.
    """

    def __init__(self, searcher: FaceSearcher, top_k: int = 10,
                 max_upload_bytes: int = 10 * 2**20, preparer: Any = None) -> None:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
        self.searcher = searcher
        self.top_k = int(top_k)
        self.max_upload_bytes = int(max_upload_bytes)
        if preparer is None:
            self.preparer = searcher.preparer  # now: a missing detector fails here
            self.preparation_warning = searcher.preparation_warning
        else:
            self.preparer, self.preparation_warning = inputs.query_preparer(
                preparer, searcher.index.faces, searcher.index_dir or "the index")
            if self.preparation_warning:
                logging.warning(self.preparation_warning)
        self.faces = GalleryFaces(searcher.index, self.gallery_preparer)
        self._identities = len(searcher.index.identity_counts())

    def gallery_preparer(self) -> Any:
        """The preparer that cuts a gallery photo's face for its thumbnail: the index's
        recorded preparation (the face that was coded), else the uploads' preparer (an
        index without the record, or whose detector cannot be made here)."""
        if self.preparation_warning is None:
            return self.preparer  # it cuts as recorded, or nothing is recorded
        return self.searcher.index_preparer or self.preparer

    def info(self) -> dict[str, Any]:
        """What the page shows about the index and the service's limits."""
        index = self.searcher.index
        model = index.model or {}
        return {"count": len(index), "identities": self._identities, "num_bits": index.num_bits,
                "kind": index.kind, "detector": self.preparer.method, "top_k": self.top_k,
                "max_top_k": MAX_TOP_K, "max_upload_bytes": self.max_upload_bytes,
                "model": {k: model.get(k) for k in ("path", "kind", "method", "checkpoint",
                                                    "epoch", "num_bits")}}

    def search_photo(self, photo: bytes, top_k: int | None = None) -> dict[str, Any]:
        """Search the face of a photo's bytes (see the module docstring for the answer);
        ``top_k`` hits (default the service's).

        Raises:
            ApiError: 422 (not a usable image, or no face found).
        """
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
        top_k = top_k or self.top_k
        result = self.searcher.search_faces(face[None], top_k, sources=["uploaded photo"])[0]
        num_bits = self.searcher.index.num_bits
        assert result.code is not None  # search_faces codes every face it is given
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

    def gallery_png_needs_photo(self, gallery_id_text: str) -> bool:
        """Whether :meth:`gallery_png` would decode a photo and detect its face (cheap;
        False for an id it refuses)."""
        if not _gallery_id_text(gallery_id_text):
            return False
        try:
            return self.faces.needs_photo(int(gallery_id_text))
        except UnknownIdError:
            return False

    def gallery_png(self, gallery_id_text: str) -> bytes:
        """The 32x32 face of a gallery item as PNG.

        Raises:
            ApiError: 404 for an id that is not an integer or not in the index, or an item
                whose source gives no face.
        """
        if not _gallery_id_text(gallery_id_text):
            raise ApiError(404, "not_found", f"no gallery item {gallery_id_text[:30]!r}")
        try:
            data = self.faces.png(int(gallery_id_text))
        except UnknownIdError as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        if data is None:
            raise ApiError(404, "no_face_image", f"gallery item {gallery_id_text} has no face "
                           "image (its source is not a readable pickle row or photo)")
        return data
