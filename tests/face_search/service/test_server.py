"""The face search web service over real HTTP: every answer and status code, bad requests
of every kind (the server must stay up), static files that never leak others, the docs,
bounded concurrency (503 instead of a queue without end), stalled uploads that hold
nothing for long, and the ``serve`` command itself."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from checkout import ROOT
from common.faces.detector import mtcnn_importable
from search_service_fixture import photo_path, raw_faces, start, synthetic_photo, tiny_index

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
LIMIT = 300_000


@pytest.fixture(scope="module")
def root():
    return tiny_index()


@pytest.fixture(scope="module")
def server(root):
    served = start(root, max_upload_bytes=LIMIT, top_k=5)
    yield served
    served.shutdown()
    served.server_close()


def request(server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, Any, bytes]:
    """(status, headers (names in any case), body) of one request on a new connection."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        connection.close()


def raw(server, data: bytes, timeout: float = 20, half_close: bool = True) -> bytes:
    """Send bytes as they are, then (``half_close``) end the sending side; everything the
    server answers until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def raw_problem(server, data: bytes) -> tuple[int, dict]:
    head, _, body = raw(server, data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str = "b0und4ry") -> \
        tuple[bytes, dict]:
    body = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename
                                                     else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def decode_data_url(url: str, mime: str) -> Image.Image:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix):])))


def problem(status: int, body: bytes, expected_status: int, kind: str) -> str:
    answer = json.loads(body)
    assert status == expected_status == answer["status"], answer
    assert answer["kind"] == kind and answer["error"], answer
    return answer["error"]


# ------------------------------------------------------------------ what it serves
def test_info_page_and_static_files(server):
    status, headers, body = request(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert (info["count"], info["identities"], info["num_bits"]) == (48 + 2, 7, 12)
    assert info["model"]["method"] == "dcbh" and info["model"]["kind"] == "export"
    assert (info["top_k"], info["max_upload_bytes"], info["detector"]) == (5, LIMIT, "center")
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'id="photo-input"' in page and b"<script src=\"/app.js\"" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css"),
                       ("/index.html", "text/html")):
        status, headers, _ = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind), path
    status, headers, body = request(server, "HEAD", "/")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(page)


def test_search_answers_the_face_its_code_and_the_searchers_hits(server, root):
    from face_search.service.web_api import bit_string

    faces, _ = raw_faces(root / "data" / "test")
    photo = synthetic_photo(faces[4])
    status, _, body = request(server, "POST", "/api/search", photo, {"Content-Type":
                                                                     "image/jpeg"})
    assert status == 200, body
    answer = json.loads(body)
    # the centre crop of a 96x96 photo: the middle 48x48 square
    assert answer["face"]["box"] == [24, 24, 48, 48] and answer["face"]["detector"] == "center"
    face = np.asarray(decode_data_url(answer["face"]["image"], "image/png").convert("RGB"))
    assert face.shape == (32, 32, 3)
    searcher = server.service.searcher
    expected = searcher.search_faces(face[None], 5)[0]
    assert [(h["rank"], h["gallery_id"], h["distance"], h["identity"], h["label"], h["source"])
            for h in answer["hits"]] == [(r, h.gallery_id, h.distance, h.identity, h.label,
                                          h.source) for r, h in enumerate(expected.hits, 1)]
    bits = answer["code"]["bits"]
    assert answer["code"]["num_bits"] == 12 and re.fullmatch("[01]{12}", bits)
    assert bits == bit_string(searcher.encoder.encode_faces(face[None])[0], 12)
    # the crop is the uploaded face again (enlarged, JPEG-coded and shrunk back)
    assert np.abs(face.astype(int) - faces[4]).mean() < 12
    preview = decode_data_url(answer["photo"]["preview"], "image/jpeg")
    assert preview.size == (96, 96) and (answer["photo"]["width"], answer["photo"]["height"]) \
        == (96, 96)
    assert all(h["thumbnail"] == f"/api/gallery/{h['gallery_id']}/face.png"
               for h in answer["hits"])

    form, headers = multipart([("note", None, b"hello"), ("photo", "face.jpg", photo)])
    status, _, body = request(server, "POST", "/api/search?top_k=3", form, headers)
    assert status == 200, body
    via_form = json.loads(body)
    assert via_form["hits"] == answer["hits"][:3] and via_form["code"] == answer["code"]


def test_parallel_searches_all_get_their_own_answer(server, root):
    faces, _ = raw_faces(root / "data" / "test")
    photos = [synthetic_photo(faces[i]) for i in range(6)]
    serial = [json.loads(request(server, "POST", "/api/search", p)[2])["hits"] for p in photos]
    answers: list = [None] * len(photos)

    def search(i):
        answers[i] = request(server, "POST", "/api/search", photos[i])

    threads = [threading.Thread(target=search, args=(i,)) for i in range(len(photos))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [a[0] for a in answers] == [200] * len(photos)
    assert [json.loads(a[2])["hits"] for a in answers] == serial


def test_gallery_faces_come_from_pickle_rows_and_photos(server, root):
    from common.faces import FacePreparer

    index = server.service.searcher.index
    train_faces, _ = raw_faces(root / "data" / "train")
    status, headers, body = request(server, "GET", "/api/gallery/7/face.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), train_faces[7])

    ids = {os.path.basename(index.item(int(i)).source): int(i)
           for i in index.ids_of_identities(["photo person"])}
    keep, gone = ids["keep.png"], ids["gone.png"]
    assert index.item(keep).source == photo_path(root, "keep.png")
    status, _, body = request(server, "GET", f"/api/gallery/{keep}/face.png")
    assert status == 200
    expected = FacePreparer("center").prepare_file(photo_path(root, "keep.png")).face
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expected)

    os.replace(photo_path(root, "gone.png"), photo_path(root, "gone.png.moved"))
    try:
        problem(*request(server, "GET", f"/api/gallery/{gone}/face.png")[::2], 404,
                "no_face_image")
        with open(photo_path(root, "gone.png.moved"), "rb") as f:
            answer = json.loads(request(server, "POST", "/api/search?top_k=50", f.read())[2])
        hit = next(h for h in answer["hits"] if h["gallery_id"] == gone)
        assert hit["thumbnail"] is None and hit["distance"] == 0
    finally:
        os.replace(photo_path(root, "gone.png.moved"), photo_path(root, "gone.png"))
    for bad in ("999999", "-1", "1.5", "abc", "%2E1", "1" * 40):
        status, _, body = request(server, "GET", f"/api/gallery/{bad}/face.png")
        problem(status, body, 404, "not_found")
    # a percent-encoded digit is that digit (URLs are compared decoded)
    assert request(server, "GET", "/api/gallery/%37/face.png")[2] == \
        request(server, "GET", "/api/gallery/7/face.png")[2]


# ------------------------------------------------------------------ refusals
def test_unusable_uploads_get_a_clear_4xx_json_answer(server):
    faces = np.zeros((1, 32, 32, 3), np.uint8)
    photo = synthetic_photo(faces[0])
    cases = [
        (b"this is not a picture", {"Content-Type": "image/jpeg"}, 422, "not_an_image",
         "not an image"),
        (photo[:len(photo) // 2], {"Content-Type": "image/jpeg"}, 422, "not_an_image",
         "truncated"),
        (b"", {"Content-Type": "image/png"}, 400, "no_photo", "empty"),
        (photo, {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
        (b'{"photo": 1}', {"Content-Type": "application/json"}, 415, "unsupported_media_type",
         "multipart/form-data"),
    ]
    form, headers = multipart([("picture", "x.jpg", photo)])
    cases.append((form, headers, 400, "no_photo", "no field 'photo'"))
    form, headers = multipart([("photo", "", b"")])
    cases.append((form, headers, 400, "no_photo", "empty"))
    form, headers = multipart([("photo", "x.jpg", photo)])
    cases += [
        (form[:-12], headers, 400, "bad_form", "closing boundary"),
        (form, {"Content-Type": "multipart/form-data"}, 400, "bad_form", "boundary"),
        (form, {"Content-Type": "multipart/form-data; boundary=other"}, 400, "bad_form",
         "Invalid multipart data"),
        (b"--b0und4ry\r\nContent-Type: image/jpeg\r\n\r\nxx\r\n--b0und4ry--\r\n", headers, 400,
         "bad_form", "Content-Disposition"),
        (b"--b0und4ry\r\n\r\nxx\r\n--b0und4ry--\r\n", headers, 400, "bad_form",
         "Content-Disposition"),
        (multipart([("photo", None, photo)])[0], headers, 400, "no_photo", "not a file"),
    ]
    for body, headers, status, kind, words in cases:
        got, _, answer = request(server, "POST", "/api/search", body, headers)
        assert words in problem(got, answer, status, kind), (words, answer)
    for top_k in ("0", "abc", "5000", "-3", "1e3"):
        got, _, answer = request(server, "POST", f"/api/search?top_k={top_k}", photo)
        assert "top_k: Input should be" in problem(got, answer, 400, "bad_top_k")
        assert repr(top_k) in json.loads(answer)["error"]


def test_forms_are_bounded_in_parts_and_header_sizes(server):
    """python-multipart's bounds, as the service sets them: one file, 15 other fields of
    at most 64 KB, 8 header lines per part of at most 4 KB each."""
    photo = synthetic_photo(np.zeros((32, 32, 3), np.uint8))
    _, headers = multipart([])

    def part(headers: bytes) -> bytes:
        return (b'--b0und4ry\r\nContent-Disposition: form-data; name="photo"; filename="f.jpg"'
                b"\r\n" + headers + b"\r\n" + photo + b"\r\n--b0und4ry--\r\n")

    for body, words in [
            (multipart([("note", None, b"x")] * 16 + [("photo", "f.jpg", photo)])[0],
             "Too many fields. Maximum number of fields is 15"),
            (multipart([("photo", "a.jpg", photo), ("other", "b.jpg", photo)])[0],
             "Too many files. Maximum number of files is 1"),
            (multipart([("note", None, b"x" * 70_000), ("photo", "f.jpg", photo)])[0],
             "Part exceeded maximum size of 64KB"),
            (part(b"X-Long: " + b"a" * 5000 + b"\r\n"), "Maximum header size exceeded"),
            (part(b"".join(b"X-%d: 1\r\n" % i for i in range(9))),
             "Maximum header count exceeded")]:
        got, _, answer = request(server, "POST", "/api/search", body, headers)
        assert words in problem(got, answer, 400, "bad_form"), (words, answer)
    got, _, answer = request(server, "POST", "/api/search",
                             multipart([("note", None, b"x")] * 15
                                       + [("photo", "f.jpg", photo)])[0], headers)
    assert got == 200, answer  # at the bounds: served


def test_the_connection_stays_usable_after_a_refusal(server):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        for path, body, status in (("/api/search?top_k=0", b"x" * 1000, 400),
                                   ("/api/search", b"not an image", 422),
                                   ("/api/search", b"", 400)):
            connection.request("POST", path, body, {"Content-Type": "image/jpeg"})
            answer = connection.getresponse()
            assert answer.status == status and json.loads(answer.read())["status"] == status
            connection.request("GET", "/api/info")  # the same connection (keep-alive)
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["count"] == 50
    finally:
        connection.close()


@pytest.mark.skipif(not mtcnn_importable(),
                    reason="the mtcnn package is not installed (extra 'faces')")
def test_a_photo_without_a_face_is_a_422(root):
    grey = io.BytesIO()
    Image.new("RGB", (200, 160), (128, 128, 128)).save(grey, "PNG")
    served = start(root, detector="mtcnn")
    try:
        got, _, answer = request(served, "POST", "/api/search", grey.getvalue(),
                                 {"Content-Type": "image/png"})
        assert "no face found" in problem(got, answer, 422, "no_face")
        assert request(served, "GET", "/api/info")[0] == 200
    finally:
        served.shutdown()
        served.server_close()


def test_uploads_over_the_limit_are_refused_with_413(server, root):
    head = (f"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {LIMIT + 1}\r\n\r\n").encode()
    status, answer = raw_problem(server, head)  # refused before a byte of the body
    assert status == 413 and answer["kind"] == "too_large"
    assert f"{LIMIT:,} bytes" in answer["error"] and f"{LIMIT + 1:,} bytes" in answer["error"]
    # a client that sends the whole body still reads the answer (the rest is drained)
    got, _, body = request(server, "POST", "/api/search", os.urandom(LIMIT + 200_000),
                           {"Content-Type": "image/jpeg"})
    problem(got, body, 413, "too_large")


def test_a_photo_of_exactly_the_limit_is_searched_raw_or_in_a_form(server, root):
    """The page lets through a file of exactly the limit: so does the server, whether the
    photo is the body or a form's file part (the form may add 64 KiB of framing)."""
    photo = synthetic_photo(raw_faces(root / "data" / "test")[0][0])
    exact = photo + b"\0" * (LIMIT - len(photo))  # JPEG ignores what follows its end
    assert len(exact) == LIMIT
    status, _, body = request(server, "POST", "/api/search", exact, {"Content-Type":
                                                                     "image/jpeg"})
    assert status == 200, body
    form, headers = multipart([("photo", "exact.jpg", exact)])
    status, _, body = request(server, "POST", "/api/search", form, headers)
    assert status == 200, body
    from face_search.service.uploads import FORM_FRAMING_BYTES
    assert LIMIT < len(form) <= LIMIT + FORM_FRAMING_BYTES
    form, headers = multipart([("photo", "big.jpg", exact + b"\0")])  # one byte more
    error = problem(*request(server, "POST", "/api/search", form, headers)[::2], 413,
                    "too_large")
    assert error == (f"the photo is {LIMIT + 1:,} bytes, more than this service's limit of "
                     f"{LIMIT:,} bytes ({LIMIT / 2**20:g} MB)")
    framing = (f"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
               f"multipart/form-data; boundary=b0und4ry\r\n"
               f"Content-Length: {LIMIT + FORM_FRAMING_BYTES + 1}\r\n\r\n").encode()
    status, answer = raw_problem(server, framing)  # refused before a byte of the body
    assert (status, answer["kind"]) == (413, "too_large")
    assert f"the form is {LIMIT + FORM_FRAMING_BYTES + 1:,} bytes" in answer["error"]


def test_another_host_name_is_refused_by_a_loopback_server(server):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    status, answer = raw_problem(server, b"GET /api/info HTTP/1.1\r\nHost: evil.example:8080"
                                         b"\r\nConnection: close\r\n\r\n")
    assert (status, answer["kind"]) == (421, "misdirected_request")
    assert "'evil.example:8080'" in answer["error"]
    port = server.server_address[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
        status, _, body = request(server, "GET", "/api/info", headers={"Host": host})
        assert status == 200 and json.loads(body)["count"] == 50, host


def test_wrong_methods_paths_and_lengths(server):
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, body = request(server, method, "/api/search")
        problem(status, body, 405, "method_not_allowed")
        assert headers["Allow"] == "POST"
    status, headers, body = request(server, "POST", "/", b"x")
    problem(status, body, 405, "method_not_allowed")
    assert headers["Allow"] == "GET, HEAD"
    problem(*request(server, "DELETE", "/api/info")[::2], 405, "method_not_allowed")
    problem(*request(server, "POST", "/nothing/here", b"x")[::2], 404, "not_found")
    problem(*request(server, "GET", "/api/nothing")[::2], 404, "not_found")
    problem(*request(server, "BREW", "/")[::2], 501, "not_implemented")
    status, headers, body = request(server, "HEAD", "/api/info")  # HEAD wherever GET
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status == 411 and answer["kind"] == "length_required"
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: localhost\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n"
                                         b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 411 and "chunked" in answer["error"]
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: localhost\r\n"
                                         b"Content-Length: -5\r\n\r\n")
    assert status == 400 and answer["kind"] == "bad_content_length"
    for lengths in (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"Content-Length: 5, 6\r\n"):
        status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: localhost\r\n"
                                             + lengths + b"\r\nhello!")
        assert status == 400 and answer["kind"] == "bad_content_length"
        assert "conflicting Content-Length" in answer["error"]
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: localhost\r\n"
                                         b"Content-Length: 100\r\nConnection: close\r\n\r\n"
                                         b"only twenty bytes...")
    # the client stops sending (half-closes): the server sees the body end early
    assert status == 400 and answer["kind"] == "incomplete_body"


def test_static_paths_never_reach_other_files(server):
    secret = "def serve("  # a line of face_search/service/server.py, one folder above web/
    for path in ("/../server.py", "/..%2fserver.py", "/%2e%2e/server.py", "/web/index.html",
                 "/face_search/web/app.js", "//etc/passwd", "/index.html/..", "/./app.js",
                 "/app.js%00.png", "/APP.JS", "/..\\server.py", "/" + "a" * 5000):
        answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                     .encode())
        status = int(answer.split(b" ", 2)[1])
        assert status == 404, (path, answer[:200])
        assert secret.encode() not in answer and b"root:" not in answer


def test_malformed_requests_and_huge_headers_leave_it_running(server):
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112: 400)
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
         + b"\r\n", 431),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 414),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
         b"GET /api/info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 200),
    ]
    for data, expected in cases:
        answer = raw(server, data)
        assert int(answer.split(b" ", 2)[1]) == expected, (data[:60], answer[:200])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-security-policy: default-src 'none'" in head.lower()
        if expected != 200:
            body = json.loads(body)
            assert body["status"] == expected and body["error"]
    # headers or a request line that arrive in pieces: the parser's own limit
    for opening, expected in ((b"GET / HTTP/1.1\r\nHost: localhost\r\nX: ", 431), (b"GET /", 414)):
        pieces = [opening] + [b"a" * 6000] * 4
        with socket.create_connection(server.server_address[:2], timeout=20) as sock:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(0.05)
            answer = sock.recv(65536)
        assert int(answer.split(b" ", 2)[1]) == expected, answer[:200]
    with socket.create_connection(server.server_address[:2]) as sock:
        sock.sendall(b"GET / HT")  # a client that goes away half way
    status, _, body = request(server, "GET", "/api/info")
    assert status == 200 and json.loads(body)["count"] == 50


# ------------------------------------------------------------------ the docs
def test_docs_and_openapi_describe_the_api(server):
    status, headers, body = request(server, "GET", "/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    spec = json.loads(body)
    assert set(spec["paths"]) == {"/api/info", "/api/search", "/api/gallery/{gallery_id}/face.png"}
    search = spec["paths"]["/api/search"]["post"]
    assert set(search["requestBody"]["content"]) == {"multipart/form-data", "image/*",
                                                     "application/octet-stream"}
    assert {"400", "413", "415", "422", "503"} <= set(search["responses"])
    assert set(spec["components"]["schemas"]["Problem"]["properties"]) == {"error", "kind",
                                                                          "status"}
    status, headers, page = request(server, "GET", "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/openapi.json" in page and b'src="/docs/swagger-ui-bundle.js"' in page
    assert b"cdn." not in page  # Swagger UI is served here, not from a CDN
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self' 'sha256-" in policy and "default-src 'none'" in policy
    for path, kind in (("/docs/swagger-ui-bundle.js", "text/javascript"),
                       ("/docs/swagger-ui.css", "text/css")):
        status, headers, body = request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind) and len(body) > 10_000
    problem(*request(server, "POST", "/docs", b"x")[::2], 405, "method_not_allowed")


# ------------------------------------------------------------------ load and stalls
class HeldSearches:
    """A SearchService whose searches wait until ``release`` is set (``entered`` counts
    the searches that started): a deterministic overload."""

    def __init__(self, service):
        self.service = service
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.service, name)

    def search_photo(self, photo, top_k=None):
        self.entered.release()
        self.release.wait(60)
        return self.service.search_photo(photo, top_k)


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_searches_beyond_the_limit_wait_briefly_then_get_503(root):
    served = start(root, max_concurrent_searches=2, search_wait_seconds=1.5)
    held = served.service = HeldSearches(served.service)
    photo = synthetic_photo(raw_faces(root / "data" / "test")[0][0])
    answers: dict[int, tuple] = {}

    def search(i):
        answers[i] = request(served, "POST", "/api/search", photo)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    try:
        for thread in threads[:2]:
            thread.start()
        assert held.entered.acquire(timeout=30) and held.entered.acquire(timeout=30)
        for thread in threads[2:]:  # two more wait for a turn
            thread.start()
        wait_for(lambda: served.gate.in_use == (2, 2))
        # the waiting room is full: refused at once, which its message tells apart from a
        # refusal after waiting ("no search turn free within 1.5 s", below)
        status, headers, body = request(served, "POST", "/api/search", photo)
        assert "2 searches are running" in problem(status, body, 503, "busy")
        assert headers["Retry-After"] == "1"
        for thread in threads[2:]:  # no turn within 1.5 s: 503
            thread.join(30)
        for i in (2, 3):
            assert "no search turn free within 1.5 s" in problem(answers[i][0], answers[i][2],
                                                                 503, "busy")
        held.release.set()
        for thread in threads[:2]:
            thread.join(60)
        assert [answers[i][0] for i in (0, 1)] == [200, 200]
        assert served.gate.in_use == (0, 0)
        assert request(served, "POST", "/api/search", photo)[0] == 200
    finally:
        held.release.set()
        served.shutdown()
        served.server_close()


def test_a_waiting_search_gets_the_next_turn(root):
    served = start(root, max_concurrent_searches=1, search_wait_seconds=30)
    held = served.service = HeldSearches(served.service)
    photo = synthetic_photo(raw_faces(root / "data" / "test")[0][0])
    answers: list = []
    threads = [threading.Thread(target=lambda: answers.append(
        request(served, "POST", "/api/search", photo)[0])) for _ in range(2)]
    try:
        threads[0].start()
        assert held.entered.acquire(timeout=30)
        threads[1].start()
        wait_for(lambda: served.gate.in_use == (1, 1))
        held.release.set()
        for thread in threads:
            thread.join(60)
        assert answers == [200, 200] and served.gate.in_use == (0, 0)
    finally:
        held.release.set()
        served.shutdown()
        served.server_close()


def test_a_burst_of_uploads_is_served_or_refused_never_reset(root):
    served = start(root, max_concurrent_searches=2, search_wait_seconds=5)
    faces, _ = raw_faces(root / "data" / "test")
    photos = [synthetic_photo(faces[i % len(faces)]) for i in range(24)]
    outcomes: list = [None] * len(photos)
    barrier = threading.Barrier(len(photos))

    def search(i):
        barrier.wait(30)
        try:
            outcomes[i] = request(served, "POST", "/api/search", photos[i],
                                  {"Content-Type": "image/jpeg"})[0]
        except OSError as exc:  # a reset or refused connection
            outcomes[i] = repr(exc)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(len(photos))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert set(outcomes) <= {200, 503}, outcomes
        assert outcomes.count(200) >= 2
        assert served.gate.in_use == (0, 0)
    finally:
        served.shutdown()
        served.server_close()


def test_uploads_under_way_take_admissions_and_the_next_is_refused_unread(root):
    """200 clients uploading at once must not all be read into memory: a request takes one
    of the running + waiting admissions before its body is read."""
    served = start(root, max_concurrent_searches=1, upload_idle_seconds=30)
    photo = synthetic_photo(raw_faces(root / "data" / "test")[0][0])
    head = (b"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n")
    uploading = [socket.create_connection(served.server_address[:2], timeout=20)
                 for _ in range(2)]
    try:
        for sock in uploading:
            sock.sendall(head + b"x" * 1000)  # and the rest later (never)
        wait_for(lambda: served.gate.admitted == 2)
        status, answer = raw_problem(served, head)  # headers only: no body is owed
        assert (status, answer["kind"]) == (503, "busy")
        assert answer["error"] == ("0 searches are running, 0 waiting for a turn and 2 "
                                   "uploading (at most 2 at once); try again shortly")
        for sock in uploading:  # clients that go away give their admissions back
            sock.close()
        wait_for(lambda: served.gate.admitted == 0)
        assert request(served, "POST", "/api/search", photo)[0] == 200
        assert served.gate.admitted == 0 and served.gate.in_use == (0, 0)
    finally:
        for sock in uploading:
            sock.close()
        served.shutdown()
        served.server_close()


def test_a_stalled_upload_holds_nothing_for_long(root):
    served = start(root, max_concurrent_searches=1, upload_idle_seconds=1.0)
    photo = synthetic_photo(raw_faces(root / "data" / "test")[0][0])
    try:
        # the sockets' timeout (20 s) bounds each wait below: a server that held them for
        # its default minute would fail the test with socket.timeout
        stalled = socket.create_connection(served.server_address[:2], timeout=20)
        silent = socket.create_connection(served.server_address[:2], timeout=20)
        stalled.sendall(b"POST /api/search HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
                        b"\r\nonly twenty bytes...")
        silent.sendall(b"GET /api/info HT")  # and nothing more
        # meanwhile the only search turn is free and other requests are answered
        assert request(served, "POST", "/api/search", photo)[0] == 200
        assert request(served, "GET", "/api/info")[0] == 200
        answer = b""
        while chunk := stalled.recv(65536):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
        assert "stalled" in problem(408, body, 408, "upload_timeout")
        assert silent.recv(100) == b""  # closed without an answer
    finally:
        stalled.close()
        silent.close()
        served.shutdown()
        served.server_close()


# ------------------------------------------------------------------ the command
def serve_command(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "face_search", "serve", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serve_command_runs_refuses_bad_flags_and_stops_on_sigterm(root):
    for args, message in [((), "--index is required"),
                          (("--index", str(root / "index"), "--port", "70000"), "port"),
                          (("--index", str(root / "index"), "--top_k", "0"), "top_k"),
                          (("--index", str(root / "index"), "--max_upload_mb", "0"),
                           "max_upload_mb"),
                          (("--index", str(root / "index"), "--max_concurrent_searches", "0"),
                           "max_concurrent_searches"),
                          (("--index", str(root / "index"), "--bogus"), "bogus"),
                          (("--index", str(root / "nothing"), "--port", "0"),
                           "no such index folder")]:
        done = subprocess.run([sys.executable, "-m", "face_search", "serve", *args], env=ENV,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    process = serve_command("--index", str(root / "index"), "--port", "0", "--detector",
                            "center")
    try:
        line = process.stdout.readline()
        found = re.search(r"at http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)", line)
        assert found and "serving 50 faces of 7 identities (12-bit codes" in line, line
        port = int(found.group(1))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/info")
        assert connection.getresponse().status == 200
        connection.close()
        taken = subprocess.run([sys.executable, "-m", "face_search", "serve", "--index",
                                str(root / "index"), "--port", str(port)], env=ENV,
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0 and out.strip() == "stopped", (out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_cuts_uploads_as_the_index_records_unless_told_otherwise(root):
    """The index's photos were cut by the centre crop (``tiny_index``): without --detector
    the service uses it (where "auto" would pick MTCNN when installed); a detector named
    otherwise is used with a warning on stderr."""
    runs = [((), "detector center", False)]
    if mtcnn_importable():
        runs.append((("--detector", "mtcnn"), "detector mtcnn", True))
    for args, started, warned in runs:
        process = serve_command("--index", str(root / "index"), "--port", "0", *args)
        try:
            line = process.stdout.readline()
            assert f"(12-bit codes, {started})" in line, (args, line)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        warnings = [w for w in err.splitlines() if "two different preparations" in w]
        assert len(warnings) == (1 if warned else 0), (args, err)
        if warned:
            assert warnings[0].startswith("warning: ")
            assert "prepared with detector center (center_fraction 0.5)" in warnings[0]
