"""How many searches the web service takes at once, and what happens to the others.

Why: a search holds its upload (up to the upload limit), decodes the photo (at most about
400 MB for 50 megapixels, ``common.faces.image_io``), detects and encodes its face, all on
the CPU. Run without a bound, a burst of uploads makes every one of them slow and the
memory grows with the burst; queued without a bound, a client waits minutes for an answer
it stopped waiting for. So a request takes an admission (:meth:`SearchGate.admission`)
before a byte of its body is read, and holds it while it uploads, waits and runs: at most
``running + waiting`` are admitted, every other request is answered at once, 503 ``busy``
with ``Retry-After``, its body unread. Of the admitted, at most ``running`` searches run
(each in a worker thread) and the others wait up to ``wait_seconds`` for a turn, in order of
arrival.

All the bookkeeping runs on the event loop (one thread), so no lock is needed; a waiting
request that is cancelled after being handed a turn passes the turn on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from face_search.service.web_api import ApiError

T = TypeVar("T")
RETRY_AFTER_SECONDS = 1


def busy(message: str) -> ApiError:
    return ApiError(503, "busy", message, {"Retry-After": str(RETRY_AFTER_SECONDS)})


class SearchGate:
    """Admission of searches: ``running`` at once, ``waiting`` more for ``wait_seconds``.

    Args:
        running: searches at once (>= 1).
        waiting: requests that may wait for a turn (>= 0); beyond: 503 at once.
        wait_seconds: how long one waits before a 503.
        names: what is run, singular and plural, for the 503 messages.
    """

    def __init__(self, running: int, waiting: int, wait_seconds: float,
                 names: tuple[str, str] = ("search", "searches")) -> None:
        if running < 1 or waiting < 0 or wait_seconds < 0:
            raise ValueError(f"bad gate: running {running}, waiting {waiting}, "
                             f"wait_seconds {wait_seconds}")
        self.running, self.waiting, self.wait_seconds = running, waiting, wait_seconds
        self.name, self.names = names
        self._busy = 0
        self._admitted = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._threads = CapacityLimiter(running)  # a worker thread for each admitted search

    @property
    def in_use(self) -> tuple[int, int]:
        """(searches running, requests waiting), for tests and logs."""
        return self._busy, sum(not turn.done() for turn in self._queue)

    @property
    def admitted(self) -> int:
        """Requests holding an admission (uploading, waiting or running)."""
        return self._admitted

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of the ``running + waiting`` admissions for the ``with`` block (the
        whole request: its upload, its wait, its search), given back however it ends.

        Raises:
            ApiError: 503 ``busy``, at once, when every admission is held.
        """
        if self._admitted >= self.running + self.waiting:
            uploading = self._admitted - sum(self.in_use)
            raise busy(f"{self._busy} {self.names} are running, {self.in_use[1]} waiting for "
                       f"a turn and {uploading} uploading (at most "
                       f"{self.running + self.waiting} at once); try again shortly")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker thread once a turn is free.

        Raises:
            ApiError: 503 ``busy`` (no turn free and the waiting room full, or no turn
                within ``wait_seconds``).
        """
        async with self._turn():
            return await anyio.to_thread.run_sync(work, *args, limiter=self._threads)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    def refuse_if_full(self) -> None:
        """Raise the 503 a run would get now (every turn taken, the waiting room full); an
        admitted request never gets it (there are no more admissions than places)."""
        if self._busy >= self.running and len(self._queue) >= self.waiting:
            raise busy(f"every {self.name} turn is taken ({self.running} running, "
                       f"{len(self._queue)} waiting); try again shortly")

    async def _acquire(self) -> None:
        if self._busy < self.running and not self._queue:
            self._busy += 1
            return
        self.refuse_if_full()
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._queue.append(turn)
        timer = loop.call_later(self.wait_seconds, self._expire, turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()  # handed a turn, then cancelled: pass it on
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(turn)

    def _expire(self, turn: asyncio.Future[None]) -> None:
        if not turn.done():
            turn.set_exception(busy(f"no {self.name} turn free within "
                                    f"{self.wait_seconds:g} s ({self.running} running); try "
                                    "again shortly"))

    def _release(self) -> None:
        """Hand the turn to the first still waiting request, or free it."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1
