"""The web app's limits on work at once, at the ASGI level with a fake service (no model, no
sockets): a search is admitted before its body is read, and a request beyond the
admissions is refused with 503 without a byte of its body read; gallery faces that need a
photo prepared pass a small gate of their own; a loopback server refuses other Host
names. Concurrency is driven with events, never with timing."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from face_search.service.web_api import ApiError
from face_search.service.web_app import create_app


class FakeService:
    """What the routes use of a SearchService: uploads up to 1,000 bytes, searches that
    answer 422, gallery faces of which id 5 needs a photo prepared and waits for
    ``release``."""

    max_upload_bytes = 1000

    def __init__(self) -> None:
        self.preparing = threading.Semaphore(0)
        self.release = threading.Event()

    def search_photo(self, photo: bytes, top_k: int | None = None) -> dict:
        raise ApiError(422, "not_an_image", f"{len(photo)} bytes, not an image")

    def gallery_png_needs_photo(self, gallery_id: str) -> bool:
        return gallery_id == "5"

    def gallery_png(self, gallery_id: str) -> bytes:
        if gallery_id == "5":
            self.preparing.release()
            assert self.release.wait(60)
        return f"png {gallery_id}".encode()


class Request:
    """One request to an ASGI app; the test hands it its body with :meth:`send_body`."""

    def __init__(self, app: Any, method: str, path: str, headers: dict[str, str]) -> None:
        self.body: asyncio.Queue[dict] = asyncio.Queue()
        self.reads = 0
        self.sent: list[dict] = []
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080)}
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict:
        self.reads += 1
        return await self.body.get()

    async def _send(self, message: dict) -> None:
        self.sent.append(message)

    def send_body(self, data: bytes) -> None:
        self.body.put_nowait({"type": "http.request", "body": data, "more_body": False})

    def disconnect(self) -> None:
        self.body.put_nowait({"type": "http.disconnect"})

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        await asyncio.wait_for(self.task, 30)  # only a request that never ends waits
        start = self.sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, b"".join(m.get("body", b"") for m in self.sent[1:])


def search(app: Any, length: int = 10) -> Request:
    return Request(app, "POST", "/api/search", {"host": "localhost:8080",
                                                "content-type": "image/jpeg",
                                                "content-length": str(length)})


def run(scenario) -> None:
    """Run an async test on a new event loop; a scenario that hangs fails instead."""
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0)


def test_requests_still_uploading_hold_admissions_and_the_next_is_refused_unread():
    async def scenario() -> None:
        app, asgi = create_app(FakeService(), max_concurrent_searches=1)
        gate = app.state.gate
        uploading = [search(asgi), search(asgi)]  # 1 running + 1 waiting: 2 admissions
        await until(lambda: all(r.reads == 1 for r in uploading))
        late = search(asgi)
        status, headers, body = await late.answer()
        assert late.reads == 0  # refused before a byte of its body was read
        assert gate.admitted == 2 and gate.in_use == (0, 0)
        assert (status, headers["retry-after"]) == (503, "1")
        assert json.loads(body) == {
            "error": "0 searches are running, 0 waiting for a turn and 2 uploading (at most 2 "
                     "at once); try again shortly", "kind": "busy", "status": 503}
        uploading[0].disconnect()  # a client that goes away half way
        status, _, body = await uploading[0].answer()
        assert (status, json.loads(body)["kind"]) == (400, "incomplete_body")
        assert gate.admitted == 1
        uploading[1].send_body(b"0123456789")  # a whole body, then the search fails
        status, _, body = await uploading[1].answer()
        assert (status, json.loads(body)["kind"]) == (422, "not_an_image")
        assert gate.admitted == 0 and gate.in_use == (0, 0)
        again = search(asgi)
        again.send_body(b"0123456789")
        assert (await again.answer())[0] == 422

    run(scenario)


def test_a_cancelled_upload_gives_its_admission_back():
    async def scenario() -> None:
        app, asgi = create_app(FakeService(), max_concurrent_searches=1)
        first = search(asgi)
        await until(lambda: first.reads == 1)
        assert app.state.gate.admitted == 1
        first.task.cancel()  # the server drops the connection
        await asyncio.gather(first.task, return_exceptions=True)
        assert app.state.gate.admitted == 0

    run(scenario)


def test_a_form_with_a_photo_of_exactly_the_limit_is_read():
    async def scenario() -> None:
        _, asgi = create_app(FakeService())
        photo = b"p" * 1000
        body = (b'--b0und4ry\r\nContent-Disposition: form-data; name="photo"; '
                b'filename="f.jpg"\r\n\r\n' + photo + b"\r\n--b0und4ry--\r\n")
        request = Request(asgi, "POST", "/api/search", {
            "host": "localhost", "content-type": "multipart/form-data; boundary=b0und4ry",
            "content-length": str(len(body))})
        request.send_body(body)
        status, _, answer = await request.answer()
        assert (status, json.loads(answer)["error"]) == (422, "1000 bytes, not an image")

    run(scenario)


def test_gallery_faces_from_photos_pass_their_own_gate():
    async def scenario() -> None:
        service = FakeService()
        app, asgi = create_app(service, gallery_faces_at_once=1, gallery_faces_waiting=0)
        first = Request(asgi, "GET", "/api/gallery/5/face.png", {"host": "127.0.0.1"})
        try:
            await asyncio.to_thread(service.preparing.acquire, True, 30)
            assert app.state.faces_gate.in_use == (1, 0)
            status, headers, body = await Request(asgi, "GET", "/api/gallery/5/face.png",
                                                  {"host": "127.0.0.1"}).answer()
            assert (status, headers["retry-after"]) == (503, "1")
            assert json.loads(body) == {"error": "every gallery face turn is taken (1 "
                                                 "running, 0 waiting); try again shortly",
                                        "kind": "busy", "status": 503}
            # a face that needs no photo prepared is answered meanwhile
            status, _, body = await Request(asgi, "GET", "/api/gallery/7/face.png",
                                            {"host": "127.0.0.1"}).answer()
            assert (status, body) == (200, b"png 7")
        finally:
            service.release.set()
        status, headers, body = await first.answer()
        assert (status, headers["content-type"], body) == (200, "image/png", b"png 5")
        assert app.state.faces_gate.in_use == (0, 0)

    run(scenario)


def test_a_loopback_server_refuses_other_host_names_and_a_public_one_does_not():
    async def get(asgi: Any, host: str) -> tuple[int, dict[str, str], bytes]:
        return await Request(asgi, "GET", "/", {"host": host}).answer()

    async def scenario() -> None:
        _, loopback = create_app(FakeService(), host="127.0.0.1")
        status, headers, body = await get(loopback, "evil.example:8080")
        assert (status, headers["content-type"]) == (421, "application/json")
        assert json.loads(body) == {
            "error": "this service listens on a loopback address and answers only requests "
                     "for localhost, 127.0.0.1 or [::1], not for 'evil.example:8080'",
            "kind": "misdirected_request", "status": 421}
        assert "content-security-policy" in headers
        for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
            assert (await get(loopback, host))[0] == 200, host
        _, public = create_app(FakeService(), host="0.0.0.0")
        assert (await get(public, "evil.example:8080"))[0] == 200

    run(scenario)
