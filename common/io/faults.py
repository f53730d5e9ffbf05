"""Named crash points for the crash-consistency tests.

Why: "a kill at any instant loses nothing" is only worth something if it is tried
at the instants that matter (between writing a state and naming it, inside an
evaluation, between the renames of an export). Code that writes a user's files
calls :func:`crash_point` with a name at such instants; normally that costs one
dictionary lookup. A test sets ``FACE_HASHING_CRASH_AT=NAME`` (or ``NAME@N``: the
N-th time that point is reached, 1-based) and the process kills itself there with
SIGKILL, exactly as ``kill -9`` would: no ``finally`` block, no flush.
"""

from __future__ import annotations

import os
import signal

ENV = "FACE_HASHING_CRASH_AT"
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.partition("@")
    return name, int(count) if count else 1


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL here if ``FACE_HASHING_CRASH_AT`` names ``name``."""
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
