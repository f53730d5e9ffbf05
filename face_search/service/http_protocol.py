"""uvicorn's HTTP/1.1 connection (h11), with what a public upload service needs on top.

Why a subclass of uvicorn's own (``uvicorn.protocols.http.h11_impl.H11Protocol``) instead of
code of ours: parsing, keep-alive and flow control stay uvicorn's and h11's; four things
they leave open are added here:

* a request h11 refuses (a malformed request line, headers too large, two different
  Content-Length headers, a bad Content-Length) is answered in the service's JSON shape
  with its own status (400, 414, 431, 501) and the security headers, not as a plain-text
  400;
* a connection on which the client owes bytes (headers, or a body the app is not reading)
  is closed after ``idle_seconds`` of silence; uvicorn waits for ever;
* after an answer that left a body unread (413, 503, ...), uvicorn reads and drops the rest
  so that the client, still sending, gets the answer instead of a reset; here that lasts
  at most ``linger_seconds``, then the connection is closed;
* a client that half-closes its side after a request (``shutdown(SHUT_WR)``) still gets
  the answer; a body that ends early that way is the app's ``incomplete_body``, not a hang.
"""

from __future__ import annotations

import asyncio
import sys
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from face_search.service.http_errors import kind_of, problem_bytes
from face_search.service.request_guard import SECURITY_HEADERS
from face_search.service.web_api import ApiError

IDLE_SECONDS = 10.0    # a client owing bytes may stay silent this long
LINGER_SECONDS = 2.0   # an unread body is read and dropped this long after the answer


def protocol_refusal(error: BaseException | None, pending: bytes) -> ApiError:
    """The answer to a request h11 refused with ``error``; ``pending``: the bytes it holds."""
    text = str(error) if error is not None else "malformed request"
    status = getattr(error, "error_status_hint", 400)
    if status == 431 and b"\n" not in pending:
        return ApiError(414, "uri_too_long", "the request line is too long")
    if status == 431:
        return ApiError(431, "request_header_fields_too_large", "the request headers are too "
                        "large")
    kind = "bad_content_length" if "content-length" in text.lower() else kind_of(status)
    return ApiError(status, kind, f"malformed HTTP request: {text}")


class SearchProtocol(H11Protocol):
    """uvicorn's h11 connection with JSON refusals, idle and linger limits (see above)."""

    idle_seconds = IDLE_SECONDS
    linger_seconds = LINGER_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._idle: asyncio.TimerHandle | None = None
        self._lingering = False
        super().connection_made(transport)
        self._watch_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a refusal of the parser: dropped until the close
        self._watch_idle()
        super().data_received(data)

    # asyncio's Protocol.eof_received may return True (keep the transport open); uvicorn's
    # H11Protocol declares None.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client is done sending. While one of its requests is being answered, keep
        the connection open for that answer, then close it."""
        cycle = self.cycle
        if self._lingering or cycle is None or cycle.response_complete:
            return None  # nothing to answer: close (uvicorn's behaviour)
        cycle.keep_alive = False
        if cycle.more_body:  # the body ends here, short of its length
            cycle.more_body = False
            cycle.message_event.set()
        return True

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 refused (called while handling the error)."""
        refused = protocol_refusal(sys.exc_info()[1], self.conn.trailing_data[0])
        body = problem_bytes(refused)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Connection", "close"), *SECURITY_HEADERS.items()]
        for event in (h11.Response(status_code=refused.status, headers=headers,
                                   reason=HTTPStatus(refused.status).phrase.encode()),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self._linger()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and not self.transport.is_closing() \
                and self.conn.their_state is h11.SEND_BODY:  # answered before its body was read
            self.loop.call_later(self.linger_seconds, self._stop_draining, cycle)

    # ------------------------------------------------------------------ internals
    def _watch_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self.loop.call_later(self.idle_seconds, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # the app is at work on a request (and times its own body reads)
        if not self.transport.is_closing():
            self.transport.close()

    def _stop_draining(self, cycle: Any) -> None:
        if self.cycle is cycle and self.conn.their_state is h11.SEND_BODY \
                and not self.transport.is_closing():
            self.transport.close()

    def _linger(self) -> None:
        """Signal the end of the answer, drop what the client still sends, close soon."""
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.linger_seconds, self.transport.close)


def protocol_class(idle_seconds: float = IDLE_SECONDS) -> type[SearchProtocol]:
    """:class:`SearchProtocol` with this idle limit (uvicorn takes a class, not an
    instance)."""
    return type("SearchProtocol", (SearchProtocol,), {"idle_seconds": idle_seconds})
