"""The face search web service over real HTTP: every answer and status code, bad requests
of every kind (the server must stay up), static files that never leak others, and the
``serve`` command itself."""

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

import numpy as np
import pytest
from PIL import Image

from common.faces.detector import mtcnn_importable
from search_service_fixture import photo_path, raw_faces, start, synthetic_photo, tiny_index

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def raw(server, data: bytes, timeout: float = 20) -> bytes:
    """Send bytes as they are, then end the sending side; everything the server answers
    until it closes."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
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
    from face_search.web_api import bit_string

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
    for bad in ("999999", "-1", "1.5", "abc", "%31", "1" * 40):
        status, _, body = request(server, "GET", f"/api/gallery/{bad}/face.png")
        problem(status, body, 404, "not_found")


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
         "no part"),
        (b"--b0und4ry\r\nContent-Type: image/jpeg\r\n\r\nxx\r\n--b0und4ry--\r\n", headers, 400,
         "bad_form", "Content-Disposition"),
        (b"--b0und4ry\r\n\r\nxx\r\n--b0und4ry--\r\n", headers, 400, "bad_form", "no headers"),
        (multipart([("f", None, b"x")] * 17)[0], headers, 400, "bad_form",
         "more than 16 parts"),
    ]
    for body, headers, status, kind, words in cases:
        got, _, answer = request(server, "POST", "/api/search", body, headers)
        assert words in problem(got, answer, status, kind), (words, answer)
    for top_k in ("0", "abc", "5000", "-3", "1e3"):
        got, _, answer = request(server, "POST", f"/api/search?top_k={top_k}", photo)
        assert "top_k must be" in problem(got, answer, 400, "bad_top_k")


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
    head = (f"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {LIMIT + 1}\r\n\r\n").encode()
    status, answer = raw_problem(server, head)  # refused before a byte of the body
    assert status == 413 and answer["kind"] == "too_large"
    assert f"{LIMIT:,} bytes" in answer["error"] and f"{LIMIT + 1:,} bytes" in answer["error"]
    # a client that sends the whole body still reads the answer (the rest is drained)
    got, _, body = request(server, "POST", "/api/search", os.urandom(LIMIT + 200_000),
                           {"Content-Type": "image/jpeg"})
    problem(got, body, 413, "too_large")
    form, headers = multipart([("photo", "big.jpg", b"\0" * LIMIT)])
    problem(*request(server, "POST", "/api/search", form, headers)[::2], 413, "too_large")


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
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and answer["kind"] == "length_required"
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: x\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n"
                                         b"5\r\nhello\r\n0\r\n\r\n")
    assert status == 411 and "chunked" in answer["error"]
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: -5\r\n\r\n")
    assert status == 400 and answer["kind"] == "bad_content_length"
    status, answer = raw_problem(server, b"POST /api/search HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: 100\r\nConnection: close\r\n\r\n"
                                         b"only twenty bytes...")
    # the client stops sending (half-closes): the server sees the body end early
    assert status == 400 and answer["kind"] == "incomplete_body"


def test_static_paths_never_reach_other_files(server):
    secret = "def serve("  # a line of face_search/server.py, one folder above web/
    for path in ("/../server.py", "/..%2fserver.py", "/%2e%2e/server.py", "/web/index.html",
                 "/face_search/web/app.js", "//etc/passwd", "/index.html/..", "/./app.js",
                 "/app.js%00.png", "/APP.JS", "/..\\server.py", "/" + "a" * 5000):
        answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode())
        status = int(answer.split(b" ", 2)[1])
        assert status == 404, (path, answer[:200])
        assert secret.encode() not in answer and b"root:" not in answer


def test_malformed_requests_and_huge_headers_leave_it_running(server):
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
         431),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
         b"GET /api/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200),
    ]
    for data, expected in cases:
        answer = raw(server, data)
        assert int(answer.split(b" ", 2)[1]) == expected, (data[:60], answer[:200])
        if expected != 200:
            body = json.loads(answer.partition(b"\r\n\r\n")[2])
            assert body["status"] == expected and body["error"]
    with socket.create_connection(server.server_address[:2]) as sock:
        sock.sendall(b"GET / HT")  # a client that goes away half way
    status, _, body = request(server, "GET", "/api/info")
    assert status == 200 and json.loads(body)["count"] == 50


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
