"""How many searches the web service runs at once, and what happens to the others.

Why: a search decodes the photo (a 50-megapixel photo takes 150 MB), detects and encodes
its face, all on the CPU. Run without a bound, a burst of uploads makes every one of them
slow and the memory grows with the burst; queued without a bound, a client waits minutes
for an answer it stopped waiting for. So at most ``running`` searches run (each in a worker
thread), at most ``waiting`` more wait up to ``wait_seconds`` for a turn, in order of
arrival, and every other request is answered at once: 503 ``busy`` with ``Retry-After``.

All the bookkeeping runs on the event loop (one thread), so no lock is needed; a waiting
request that is cancelled after being handed a turn passes the turn on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
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
    """

    def __init__(self, running: int, waiting: int, wait_seconds: float) -> None:
        if running < 1 or waiting < 0 or wait_seconds < 0:
            raise ValueError(f"bad gate: running {running}, waiting {waiting}, "
                             f"wait_seconds {wait_seconds}")
        self.running, self.waiting, self.wait_seconds = running, waiting, wait_seconds
        self._busy = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._threads = CapacityLimiter(running)  # a worker thread for each admitted search

    @property
    def in_use(self) -> tuple[int, int]:
        """(searches running, requests waiting), for tests and logs."""
        return self._busy, sum(not turn.done() for turn in self._queue)

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
        """Raise the 503 a search would get now (every turn taken, the waiting room full):
        checked before a request's body is read, so that a refusal under load costs
        nothing."""
        if self._busy >= self.running and len(self._queue) >= self.waiting:
            raise busy(f"{self.running} searches are running and {len(self._queue)} waiting; "
                       "try again shortly")

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
            turn.set_exception(busy(f"no search turn free within {self.wait_seconds:g} s "
                                    f"({self.running} running); try again shortly"))

    def _release(self) -> None:
        """Hand the turn to the first still waiting request, or free it."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy -= 1
