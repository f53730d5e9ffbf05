"""Stop long work at a safe point when SIGINT or SIGTERM arrives.

Why: Python raises ``KeyboardInterrupt`` at the next bytecode, and during training that
is often inside TensorFlow's C++ code calling back into Python. Seen on the CI machine:
a SIGTERM that landed while a summary scalar was converted to a tensor crashed the
process with a segmentation fault (exit -11) instead of the clean exit 130 with every
file intact. Inside :func:`deferred` a signal only records a request; the training loop
calls :func:`check` between steps, where raising is safe, and the end of the block checks
once more, so a request that came after the last step is still honoured. A second signal of either
kind gets the default action (the process ends at once), so a stuck process can still
be stopped.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[str] = []


def _record(signum: int, frame: Any) -> None:
    _pending.append(signal.Signals(signum).name)
    for sig in _SIGNALS:  # the next one ends the process at once
        signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM are recorded and raised by :func:`check`.

    Outside the main thread (where Python cannot set handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    _pending.clear()
    for sig in _SIGNALS:
        signal.signal(sig, _record)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Reached only when the block ended normally: a request recorded after its last check
    # (during the final evaluation, say) is honoured here, never dropped.
    check()


def check() -> None:
    """Raise ``KeyboardInterrupt`` (naming the signal) if a stop was requested; only in the
    main thread, whose :func:`deferred` recorded it (a worker thread's safe point, an index
    saved by a service thread, say, must not take the main thread's request)."""
    if _pending and threading.current_thread() is threading.main_thread():
        name = _pending[0]
        _pending.clear()
        raise KeyboardInterrupt(name)
