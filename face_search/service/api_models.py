"""The JSON answers of the web service as pydantic models.

Why: FastAPI checks every answer against them (a field the page relies on cannot go
missing unnoticed) and /openapi.json and /docs describe the API from them. They mirror the
plain dicts of ``face_search.service.web_api``, field for field and in the same order.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """Every refusal."""

    error: str = Field(description="what went wrong, for a person")
    kind: str = Field(description="what went wrong, for a program: too_large, no_face, busy ...")
    status: int = Field(description="the HTTP status again")


class ModelInfo(BaseModel):
    path: str | None
    kind: str | None
    method: str | None
    checkpoint: str | None
    epoch: int | None
    num_bits: int | None


class Info(BaseModel):
    """The index and the service's limits."""

    count: int = Field(description="faces in the gallery")
    identities: int
    num_bits: int
    kind: str = Field(description="index kind: exact or mih")
    detector: str = Field(description="face detector for uploads: mtcnn or center")
    top_k: int = Field(description="hits per search unless ?top_k= says otherwise")
    max_top_k: int
    max_upload_bytes: int
    model: ModelInfo


class Photo(BaseModel):
    width: int
    height: int
    preview: str = Field(description="the photo shrunk to 640 pixels, a JPEG data URL")


class Face(BaseModel):
    box: list[int] | None = Field(description="[x, y, width, height] in the photo's pixels")
    image: str = Field(description="the 32x32 face the model encodes, a PNG data URL")
    detector: str
    faces_found: int
    note: str


class Code(BaseModel):
    bits: str = Field(description="the face's code, bit 0 first ('1': the model's +1)")
    num_bits: int


class Hit(BaseModel):
    rank: int
    gallery_id: int
    distance: int = Field(description="Hamming distance to the query's code")
    identity: str
    label: int
    source: str
    thumbnail: str | None = Field(description="URL of the gallery face, None if its source "
                                              "is gone")


class SearchAnswer(BaseModel):
    """A search: the photo, the face found, its code and the nearest gallery faces."""

    photo: Photo
    face: Face
    code: Code
    top_k: int
    gallery_size: int
    hits: list[Hit]
    seconds: float = Field(description="time spent decoding, detecting, encoding, searching")
