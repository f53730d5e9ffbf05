"""Search uploads (face_search.service.uploads): the limit is the photo's, whether sent raw or
in a form (which may add its framing), and an upload that trickles in is answered 408 once
its total deadline has passed, however regularly its bytes arrive."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from face_search.service import uploads
from face_search.service.uploads import (FORM_FRAMING_BYTES, declared_length, photo_bytes,
                                         read_body, upload_seconds)
from face_search.service.web_api import ApiError

LIMIT = 1000
BOUNDARY = "b0und4ry"
FORM_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form(photo: bytes) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="photo"; '
            f'filename="f.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + photo \
        + f"\r\n--{BOUNDARY}--\r\n".encode()


def refused(call, *args) -> ApiError:
    with pytest.raises(ApiError) as caught:
        result = call(*args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return caught.value


def test_a_form_may_add_its_framing_to_the_limit_a_raw_body_may_not():
    raw = {"content-type": "image/jpeg"}
    assert declared_length({**raw, "content-length": str(LIMIT)}, LIMIT) == LIMIT
    error = refused(declared_length, {**raw, "content-length": str(LIMIT + 1)}, LIMIT)
    assert (error.status, error.kind) == (413, "too_large")
    assert str(error) == ("the upload is 1,001 bytes, more than this service's limit of "
                          "1,000 bytes (0.000953674 MB)")
    most = LIMIT + FORM_FRAMING_BYTES
    forms = {"content-type": FORM_TYPE}
    assert declared_length({**forms, "content-length": str(most)}, LIMIT) == most
    error = refused(declared_length, {**forms, "content-length": str(most + 1)}, LIMIT)
    assert (error.status, error.kind) == (413, "too_large")
    assert str(error) == ("the form is 66,537 bytes, more than this service's limit of "
                          "1,000 bytes (0.000953674 MB) for the photo and 65,536 for the "
                          "rest of the form")


def test_the_photo_of_a_form_is_held_to_the_limit_exactly():
    photo = bytes(range(256)) * 3 + b"x" * (LIMIT - 768)
    assert len(photo) == LIMIT
    assert asyncio.run(photo_bytes(FORM_TYPE, form(photo), LIMIT)) == photo
    error = refused(photo_bytes, FORM_TYPE, form(photo + b"y"), LIMIT)
    assert (error.status, error.kind) == (413, "too_large")
    assert str(error) == ("the photo is 1,001 bytes, more than this service's limit of "
                          "1,000 bytes (0.000953674 MB)")
    assert asyncio.run(photo_bytes("image/jpeg", photo, LIMIT)) == photo


def test_an_upload_may_take_its_size_at_the_minimum_rate_or_the_floor():
    assert upload_seconds(0) == upload_seconds(100_000) == uploads.MIN_UPLOAD_SECONDS == 30
    assert upload_seconds(10 * 2**20) == 160.0  # 10 MiB at 64 KiB/s
    assert uploads.MIN_BYTES_PER_SECOND == 64 * 1024


def test_an_upload_that_trickles_in_is_answered_408_at_its_deadline():
    sent = 0

    async def trickle() -> dict:
        nonlocal sent
        await anyio.sleep(0.01)  # always within the idle limit: a byte at a time
        sent += 1
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def scenario() -> ApiError:
        with anyio.fail_after(60):  # only a broken deadline gets here
            with pytest.raises(ApiError) as caught:
                await read_body(trickle, 10**6, idle_seconds=30, total_seconds=0.3)
        return caught.value

    error = asyncio.run(scenario())
    assert (error.status, error.kind, error.headers) == (408, "upload_timeout",
                                                        {"Connection": "close"})
    assert str(error) == (f"the upload is too slow: {sent:,} of its 1,000,000 bytes arrived "
                          "in 0.3 s (send at least 64 KB/s)")


def test_a_stalled_upload_is_still_answered_after_the_idle_limit():
    async def silent() -> dict:
        await anyio.sleep(3600)
        raise AssertionError("never")

    async def scenario() -> ApiError:
        with anyio.fail_after(60):
            with pytest.raises(ApiError) as caught:
                await read_body(silent, 100, idle_seconds=0.05, total_seconds=3600)
        return caught.value

    error = asyncio.run(scenario())
    assert (error.status, error.kind) == (408, "upload_timeout")
    assert str(error) == "the upload stalled: nothing arrived for 0.05 s after 0 of its 100 bytes"


def test_a_whole_body_in_pieces_is_read():
    pieces = [{"type": "http.request", "body": b"abc", "more_body": True},
              {"type": "http.request", "body": b"de", "more_body": False}]

    async def receive() -> dict:
        return pieces.pop(0)

    assert asyncio.run(read_body(receive, 5, idle_seconds=1)) == b"abcde"
