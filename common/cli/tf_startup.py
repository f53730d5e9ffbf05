"""Keep TensorFlow's start-up notices off stderr, without losing any real error.

Why: importing TensorFlow (2.21) prints half a page of notices on every run of every
entry point: oneDNN, "Could not find cuda drivers", CPU instructions, the first call
to cuInit, and on GPU machines the duplicate cuDNN/cuFFT/cuBLAS factory
registrations, TF-TRT, NUMA. ``TF_CPP_MIN_LOG_LEVEL=2`` no longer removes them: they
are written by the C++ libraries before TensorFlow's logging is initialised.

How: a command imports TensorFlow once, explicitly, where it first needs it and after its
flags (and, where it can, its data) are checked: :func:`import_tensorflow`. That import runs
with file descriptor 2 redirected to a temporary file, followed by
``tf.config.list_physical_devices()`` (which prints the cuInit line but does not initialise
TensorFlow's runtime, so logical devices and multi-worker strategies can still be
configured); then every captured line that is not one of :data:`STARTUP_NOTICES` goes back to
stderr, so a missing library or any other real error is still shown. Nothing is installed
into ``sys.meta_path``: an import of TensorFlow elsewhere in the process (a test, another
library) is untouched. Besides, :func:`quiet_tensorflow_startup` (from
``common.cli.runner.run_main``) sets ``TF_CPP_MIN_LOG_LEVEL`` to 2 by default and drops
TensorFlow's Python INFO lines: its logger ``tensorflow`` is set to WARNING, and the INFO/DEBUG
records its modules log through absl (such as ``functional_saver.py:440] Sharding callback
duration``) are filtered out of absl's logger; the project's own lines stay.

Opt out (everything shown as TensorFlow prints it): ``TF_CPP_MIN_LOG_LEVEL=0`` or
``1``, or ``FACE_HASHING_TF_STARTUP=show``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import tempfile
from types import ModuleType
from typing import Iterator

SHOW_ENV = "FACE_HASHING_TF_STARTUP"
LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_MODULE = "tensorflow"

# The prefix of a C++ log line: absl's "I0000 00:00:1796143925.952445   11319 port.cc:153] "
# or the older "2024-01-31 12:00:00.123456: I tensorflow/.../port.cc:153] ".
_PREFIX = (r"(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ "
           r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )\S+:\d+\] ")


def _logged(message: str) -> re.Pattern[str]:
    """A whole C++ log line whose message starts with the regex ``message``."""
    return re.compile(_PREFIX + message)


STARTUP_NOTICES: tuple[re.Pattern[str], ...] = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called "
               r"are written to STDERR$"),
    _logged(r"oneDNN custom operations are on\."),
    _logged(r"Could not find cuda drivers on your machine, GPU will not be used\.$"),
    _logged(r"This TensorFlow binary is optimized to use available CPU instructions "
            r"in performance-critical operations\.$"),
    re.compile(r"To enable the following instructions: [\w ,.]*in other operations, "
               r"rebuild TensorFlow with the appropriate compiler flags\.$"),
    _logged(r"failed call to cuInit: "),
    _logged(r"Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register "
            r"factory for plugin cu(?:DNN|FFT|BLAS) when one has already been registered$"),
    _logged(r"TF-TRT Warning: Could not find TensorRT$"),
    _logged(r"computation placer already registered\."),
    _logged(r"Created device /job:localhost/replica:\d+/task:\d+/device:GPU:\d+ "
            r"with \d+ MB memory"),
    _logged(r"successful NUMA node read from SysFS had negative value"),
    _logged(r"could not open file to read NUMA node: "),
)


def filter_startup_lines(text: str) -> str:
    """``text`` without the lines that are known start-up notices (the rest unchanged)."""
    kept = [line for line in text.splitlines(keepends=True)
            if not any(notice.match(line.rstrip("\r\n")) for notice in STARTUP_NOTICES)]
    return "".join(kept)


def _shown() -> bool:
    """Whether the user asked to see TensorFlow's start-up as it is."""
    return (os.environ.get(SHOW_ENV, "").strip().lower() == "show"
            or os.environ.get(LOG_LEVEL_ENV, "").strip() in ("0", "1"))


def _flush_c_streams() -> None:
    """``fflush(NULL)``: C and C++ code may hold buffered lines meant for fd 2."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def _stderr_filtered() -> Iterator[None]:
    """Redirect fd 2 to a temporary file; afterwards write back all but the notices."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _flush_c_streams()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a detached process): nothing to hide
        yield
        return
    try:
        capture = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield
        return
    with capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            _flush_c_streams()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "surrogateescape")
            kept = filter_startup_lines(text).encode("utf-8", "surrogateescape")
            while kept:
                kept = kept[os.write(2, kept):]


class _TensorFlowInfoFilter(logging.Filter):
    """Drops the INFO and DEBUG records that TensorFlow's own modules log through absl."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        module = sys.modules.get(_MODULE)
        init = getattr(module, "__file__", None)
        if not init:
            return True
        package = os.path.dirname(os.path.abspath(init)) + os.sep
        return not os.path.abspath(record.pathname).startswith(package)


def _quiet_python_loggers() -> None:
    """TensorFlow's Python INFO lines off: its own logger, and what it logs through absl."""
    logging.getLogger(_MODULE).setLevel(logging.WARNING)
    from absl import logging as absl_logging  # absl is imported by every entry point

    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _TensorFlowInfoFilter) for f in absl_logger.filters):
        absl_logger.addFilter(_TensorFlowInfoFilter())


def quiet_tensorflow_startup() -> None:
    """``TF_CPP_MIN_LOG_LEVEL`` 2 by default and TensorFlow's Python INFO lines off
    (idempotent; never imports TensorFlow). Nothing where ``TF_CPP_MIN_LOG_LEVEL`` is 0 or 1
    or ``FACE_HASHING_TF_STARTUP`` is ``show``."""
    if _shown():
        return
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    _quiet_python_loggers()


def import_tensorflow() -> ModuleType:
    """Import TensorFlow (once) with its start-up notices filtered out of stderr.

    Commands call it where they first need TensorFlow, after their flags are checked; an
    import that already happened is returned as it is.
    """
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    if _shown():
        return importlib.import_module(_MODULE)
    quiet_tensorflow_startup()
    with _stderr_filtered():
        module = importlib.import_module(_MODULE)
        with contextlib.suppress(Exception):
            module.config.list_physical_devices()  # cuInit; no runtime context yet
    logging.getLogger(_MODULE).setLevel(logging.WARNING)
    return module
