"""Serving the face search app (``service.web_app``) with uvicorn, on a port bound first.

Why uvicorn: a maintained ASGI server whose event loop holds any number of slow clients
without a thread each; searches run in worker threads, bounded by the app's search gate.
It speaks HTTP/1.1 through h11, with the service's additions
(``face_search.service.http_protocol``).

The port is bound before the model loads, so that a taken port fails at once; the app gets
its service afterwards. It binds to 127.0.0.1 by default: anyone who can reach the port can
search the gallery. On a loopback address it answers only requests whose Host names
loopback (a web page elsewhere cannot reach it by DNS rebinding); on any other address the
Host is not checked. Which it is comes from the address the socket is bound to, not from
the ``host`` text: a name (``--host vm``, ``vm`` in /etc/hosts) or a short form (``127.1``)
that lands on loopback is guarded too.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import uvicorn

from face_search.errors import SearchInputError
from face_search.service.host_check import is_loopback
from face_search.service.http_protocol import protocol_class
from face_search.service.search_gate import SearchGate
from face_search.service.web_api import SearchService
from face_search.service.web_app import SEARCH_WAIT_SECONDS, UPLOAD_IDLE_SECONDS, create_app

BACKLOG = 2048               # connections the kernel queues before the server accepts them
STOP_SECONDS = 5             # on Ctrl-C, running requests get this long to finish
MAX_CONCURRENT_SEARCHES = 8


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Its protocol is named (IPPROTO_TCP, not 0) because asyncio
    turns Nagle's algorithm off only on such sockets' connections: with it on, an answer
    written as headers, then body waits for the client's delayed ACK (~40 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class SearchServer:
    """The app on a listening socket, served by uvicorn: :meth:`serve_forever` here, or in a
    thread (:func:`serve_in_thread`; stop it with ``shutdown(); server_close()``)."""

    def __init__(self, host: str, port: int, service: SearchService | None, quiet: bool,
                 max_concurrent_searches: int, upload_idle_seconds: float,
                 search_wait_seconds: float) -> None:
        self.socket = _listen(host, port)
        try:  # the address bound, not the name given: "vm" or "127.1" may be loopback too
            self.loopback = is_loopback(self.socket.getsockname()[0])
            self.app, asgi = create_app(service, max_concurrent_searches,
                                        upload_idle_seconds, search_wait_seconds,
                                        self.socket.getsockname()[0])
        except BaseException:
            self.socket.close()
            raise
        config = uvicorn.Config(asgi, http=protocol_class(upload_idle_seconds), lifespan="off",
                                loop="asyncio", log_config=None, log_level=logging.WARNING,
                                access_log=not quiet,
                                proxy_headers=False, server_header=False,
                                timeout_graceful_shutdown=STOP_SECONDS)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def service(self) -> SearchService | None:
        return self.app.state.service

    @service.setter
    def service(self, service: SearchService) -> None:
        self.app.state.service = service

    @property
    def gate(self) -> SearchGate:
        return self.app.state.gate

    @property
    def server_address(self) -> tuple[str, int]:
        return self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.server_address
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Answer requests until :meth:`shutdown`, or (in the main thread) Ctrl-C or SIGTERM,
        which uvicorn turns into a graceful stop and then raises again."""
        self.uvicorn.run(sockets=[self.socket])

    def serve_in_thread(self) -> threading.Thread:
        """Start :meth:`serve_forever` in a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="face-search-server",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def shutdown(self) -> None:
        """Stop serving (from another thread) and wait for the serving thread to end."""
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_SECONDS + 10)

    def server_close(self) -> None:
        self.socket.close()


def make_server(service: SearchService | None, host: str = "127.0.0.1", port: int = 8080,
                quiet: bool = False, max_concurrent_searches: int = MAX_CONCURRENT_SEARCHES,
                upload_idle_seconds: float = UPLOAD_IDLE_SECONDS,
                search_wait_seconds: float = SEARCH_WAIT_SECONDS) -> SearchServer:
    """A bound, not yet serving server (``port=0``: any free port; see ``.url``); a
    ``service`` of None must be set as ``.service`` before serving.

    ``max_concurrent_searches`` run at once, as many more are admitted (uploading, or
    waiting up to ``search_wait_seconds`` for a turn), the rest are answered 503 at once,
    before their bodies are read; an upload (or a connection owing its request) silent for
    ``upload_idle_seconds`` is dropped (408), and so is an upload slower in all than
    ``uploads.MIN_BYTES_PER_SECOND``."""
    return SearchServer(host, port, service, quiet, max_concurrent_searches,
                        upload_idle_seconds, search_wait_seconds)


def serve_in_thread(server: SearchServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread (tests, notebooks); stop it with
    ``server.shutdown(); server.server_close()``."""
    return server.serve_in_thread()


def _log_requests_to_stderr() -> None:
    """One line per request and uvicorn's warnings on stderr (stdout is for the start and
    stop lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, level in (("uvicorn.access", logging.INFO), ("uvicorn.error", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def serve(index_dir: str, model: str | None = None, checkpoint: str | None = None,
          detector: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          max_upload_bytes: int = 10 * 2**20, top_k: int = 10,
          max_concurrent_searches: int = MAX_CONCURRENT_SEARCHES) -> None:
    """Load the index and its model, then answer requests until Ctrl-C or SIGTERM (a
    normal stop: returns). ``python -m face_search serve`` calls this. ``detector``: for
    uploads; None: the preparation the index records (else "auto"); one that cuts faces
    otherwise is used with a warning on stderr (``face_search.searcher``).

    Raises:
        SearchInputError: the address cannot be listened on (port taken, unknown host);
            the index, model and detector errors of FaceSearcher and FacePreparer
            (PreparationError: the index's detector is not installed and none was named).
    """
    from face_search.searcher import FaceSearcher

    try:  # first, so that a taken port fails before the model loads
        server = make_server(None, host, port,
                             max_concurrent_searches=max_concurrent_searches)
    except OSError as exc:
        raise SearchInputError(f"cannot listen on {host}:{port}: "
                               f"{exc.strerror or exc}") from None
    try:
        searcher = FaceSearcher(index_dir, model, checkpoint, preparer=detector)
        service = SearchService(searcher, top_k, max_upload_bytes)  # makes the preparer
        server.service = service
    except BaseException:
        server.server_close()
        raise
    info = service.info()
    print(f"serving {info['count']:,} faces of {info['identities']:,} identities "
          f"({info['num_bits']}-bit codes, detector {info['detector']}) from "
          f"{searcher.index_dir} at {server.url} (Ctrl-C to stop)", flush=True)
    if not server.loopback:
        address = server.server_address[0]
        shown = host if host == address else f"{host} ({address})"
        print(f"warning: listening on {shown}: anyone who can reach this address can search "
              "the gallery and see its faces", file=sys.stderr, flush=True)
    _log_requests_to_stderr()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # uvicorn stopped gracefully, then raised the signal again
    finally:
        server.server_close()
    print("stopped", flush=True)
