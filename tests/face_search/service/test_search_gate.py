"""The search gate's admissions (face_search.service.search_gate): at most running + waiting
requests are admitted, from before their bodies are read to their answers; the next one is
refused at once, and every way out of a request gives its admission back. Driven on one
event loop with events, never with timing."""

from __future__ import annotations

import asyncio

import pytest

from face_search.service.search_gate import SearchGate
from face_search.service.web_api import ApiError


def run(scenario) -> None:
    """Run an async test on a new event loop; a scenario that hangs fails instead."""
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_admissions_are_bounded_by_running_plus_waiting():
    async def scenario() -> None:
        gate = SearchGate(running=2, waiting=1, wait_seconds=5)
        with gate.admission(), gate.admission(), gate.admission():
            assert gate.admitted == 3 and gate.in_use == (0, 0)  # all three uploading
            with pytest.raises(ApiError) as refused:
                with gate.admission():
                    raise AssertionError("a fourth request was admitted")
            error = refused.value
            assert (error.status, error.kind, error.headers) == (503, "busy",
                                                                {"Retry-After": "1"})
            assert str(error) == ("0 searches are running, 0 waiting for a turn and 3 "
                                  "uploading (at most 3 at once); try again shortly")
            assert gate.admitted == 3
        assert gate.admitted == 0
        with gate.admission():
            assert await gate.run(lambda a, b: a + b, 2, 3) == 5
        assert gate.admitted == 0 and gate.in_use == (0, 0)

    run(scenario)


def test_an_admission_is_given_back_on_errors_and_cancellation():
    async def scenario() -> None:
        gate = SearchGate(running=1, waiting=0, wait_seconds=5)
        with pytest.raises(ApiError, match="incomplete"):
            with gate.admission():
                raise ApiError(400, "incomplete_body", "incomplete")
        assert gate.admitted == 0

        uploading = asyncio.Event()

        async def upload_that_never_ends() -> None:
            with gate.admission():
                uploading.set()
                await asyncio.Event().wait()  # a client that disconnects: cancelled

        task = asyncio.create_task(upload_that_never_ends())
        await uploading.wait()
        assert gate.admitted == 1
        with pytest.raises(ApiError, match="1 uploading"):
            with gate.admission():
                pass
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.admitted == 0

        def failing_search() -> None:
            raise ValueError("the search failed")

        with pytest.raises(ValueError):
            with gate.admission():
                await gate.run(failing_search)
        assert gate.admitted == 0 and gate.in_use == (0, 0)

    run(scenario)


def test_admitted_requests_never_overflow_the_waiting_room():
    async def scenario() -> None:
        gate = SearchGate(running=1, waiting=1, wait_seconds=30)
        release = asyncio.Event()
        started = asyncio.Event()

        async def search(value: int) -> int:
            with gate.admission():
                return await gate.run(lambda: value)

        async def held() -> str:
            with gate.admission():
                async with gate._turn():  # the running search, held on the loop
                    started.set()
                    await release.wait()
            return "held"

        first = asyncio.create_task(held())
        await started.wait()
        second = asyncio.create_task(search(2))
        while gate.in_use != (1, 1):
            await asyncio.sleep(0)
        with pytest.raises(ApiError, match="1 searches are running, 1 waiting for a turn "
                                           "and 0 uploading"):
            with gate.admission():
                pass
        release.set()
        assert await first == "held" and await second == 2
        assert gate.admitted == 0 and gate.in_use == (0, 0)

    run(scenario)
