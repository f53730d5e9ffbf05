"""How every command line of the project stops: one ``error:`` line and an exit code.

Why one module: every entry point (train, evaluate, export, reproduce, synthetic)
must answer a user's mistake the same way, with one line on stderr that names the
flag or file and the reason, never a traceback. :func:`run_main` replaces
``absl.app.run`` for that: it reports flag errors, turns SIGTERM into an interrupt
and maps the error families a user can cause to ``error:`` lines.

Exit codes: 0 done (``--help`` too), 2 bad flags, data, files or paths (including
inputs too large for this machine), 1 the work itself failed (non-finite loss) or a
bug (``error: internal error: ...``), 130 interrupted (Ctrl-C or SIGTERM).
``FACE_HASHING_TRACEBACK=1`` prints the traceback above the ``error:`` line.

Kept free of flag definitions so that any entry module can use it (absl flags are
global: two modules defining ``--model_dir`` must never be imported together), and
free of TensorFlow: the project's errors are recognised by their common base class
(common.errors), TensorFlow's only when TensorFlow is already imported.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import json
import os
import signal
import sys
import traceback
from typing import Any, Callable, NoReturn

import logging as stdlib_logging

from absl import app, flags
from absl import logging as absl_logging

from common.cli.tf_startup import quiet_tensorflow_startup
from common.errors import EXIT_FAILED, EXIT_USAGE, ProjectError  # noqa: F401 (re-exported)

EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (both raise KeyboardInterrupt)
TRACEBACK_ENV = "FACE_HASHING_TRACEBACK"

_signal_name: str | None = None  # the signal that interrupted us, for the message


# ------------------------------------------------------------------ one error line
def one_line(text: str) -> str:
    """``text`` on one line: control characters (a newline in a folder name) escaped."""
    text = str(text).strip()
    return "".join(c if c == "\t" or ord(c) >= 32 else repr(c)[1:-1] for c in text)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one ``error:`` line to stderr and exit (no traceback)."""
    sys.stdout.flush()
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


# --------------------------------------------------------- exceptions -> one line
def _loaded(module: str, name: str) -> type | None:
    """Class ``module.name`` if that module is already imported (never imports it)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _file_in_traceback(exc: BaseException) -> str | None:
    """The name of the open file nearest to where ``exc`` was raised (json.load's ``fp``)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in list(frame.f_locals.values()):
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, (str, bytes)):
                return os.fsdecode(name)
    return None


def _os_error(exc: OSError) -> str:
    names = [os.fsdecode(n) if isinstance(n, (str, bytes)) else str(n)
             for n in (exc.filename, exc.filename2) if n is not None]
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _op_error(exc: BaseException) -> str:
    """TensorFlow's message (which names the file) without its graph-node noise."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if first.startswith("{{function_node") and "}}" in first:
        first = first.split("}}", 1)[1].strip()
    if len(first) > 400:
        first = first[:400] + "..."
    return f"{first} ({type(exc).__name__})"


def _memory(detail_text: str) -> str:
    detail = one_line(detail_text) or "the inputs need more memory than this machine has"
    return f"out of memory: {detail}"


def user_error(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code of an error a user's input can cause.

    None for anything else (a bug). The project's own errors (every one derives from
    :class:`common.errors.ProjectError`, which carries its exit code) come first, then
    TensorFlow's (damaged checkpoint, missing file, out of memory), malformed JSON,
    undecodable text, memory and OS errors.
    """
    if isinstance(exc, ProjectError):  # every project error: its class says the exit code
        return str(exc), exc.exit_code
    op_error = _loaded("tensorflow.python.framework.errors_impl", "OpError")
    if op_error is not None and isinstance(exc, op_error):
        if type(exc).__name__ == "ResourceExhaustedError":
            return _memory(_op_error(exc)), EXIT_USAGE
        return _op_error(exc), EXIT_USAGE
    if isinstance(exc, json.JSONDecodeError):
        where = _file_in_traceback(exc)
        return f"{where or 'a JSON file'}: malformed JSON ({exc})", EXIT_USAGE
    if isinstance(exc, UnicodeError):
        where = _file_in_traceback(exc)
        return f"{where or 'a text file'}: not valid text ({exc})", EXIT_USAGE
    if isinstance(exc, MemoryError):
        return _memory(str(exc)), EXIT_USAGE
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOMEM:
            return _memory(str(exc)), EXIT_USAGE
        return _os_error(exc), EXIT_USAGE
    return None


def report(exc: BaseException) -> NoReturn:
    """Exit with the one ``error:`` line ``exc`` deserves (bugs: exit 1, named as such)."""
    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        by = f" by {_signal_name}" if _signal_name else ""
        fail(f"interrupted{by}", EXIT_INTERRUPTED)
    try:
        known = user_error(exc)
    except Exception:  # noqa: BLE001 - describing must never hide the error itself
        known = None
    if known is not None:
        fail(*known)
    fail(f"internal error: {type(exc).__name__}: {exc} (set {TRACEBACK_ENV}=1 for the "
         "traceback)", EXIT_FAILED)


def guarded_call(work: Callable[[], Any], code: int = EXIT_USAGE) -> Any:
    """``work()``; bad input (a ValueError or OSError a user can cause) becomes one
    ``error:`` line with exit ``code``, the file named where the error knows it."""
    try:
        return work()
    except (ValueError, OSError) as exc:
        known = user_error(exc)
        fail(known[0] if known else str(exc), known[1] if known else code)


# ------------------------------------------------------------------------ runner
def parse_flags_or_fail(argv: list[str]) -> list[str]:
    """absl's flag parsing with one ``error:`` line (exit 2) instead of a usage dump."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as exc:
        fail(f"{'; '.join(str(exc).splitlines())} (see --helpshort)")
    except SystemExit as exc:
        if exc.code == 1:  # absl's --help / --helpshort / --helpfull print, then exit 1
            raise SystemExit(0) from None
        raise


def _on_sigterm(signum: int, frame: Any) -> None:
    """Handle SIGTERM as Ctrl-C, so cleanup runs; a second SIGTERM kills at once."""
    global _signal_name
    _signal_name = signal.Signals(signum).name
    signal.signal(signum, signal.SIG_DFL)
    raise KeyboardInterrupt


def install_sigterm_handler() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread."""
    signal.signal(signal.SIGTERM, _on_sigterm)


class PlainLines(stdlib_logging.Formatter):
    """Log lines as a person reads them: the message alone ("warning: " before a warning),
    without absl's ``I1206 02:32:05.982438 140245559884672 file.py:240]`` prefix."""

    def format(self, record: stdlib_logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= stdlib_logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def plain_log_lines() -> None:
    """absl's log lines without its prefix, unless ``--verbosity`` / ``-v`` was given (a
    person debugging wants absl's timestamps and source lines)."""
    if "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present:
        return
    absl_logging.get_absl_handler().setFormatter(PlainLines("%(message)s"))


def guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """``main`` whose every escaping exception becomes one ``error:`` line."""
    def run(argv: list[str]) -> Any:
        plain_log_lines()
        try:
            return main(argv)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the last resort, by design
            report(exc)
    return run


def show_flags_of(module: str | None) -> None:
    """Make the flags that ``module`` (a command's code) defines key flags of the program
    being run, so that ``--help`` / ``--helpshort`` list them.

    Why: absl lists the flags of the main module (``sys.argv[0]``), and a command is often
    run through a two-line alias (``python -m common.synthetic``) or a console script whose
    flags are defined elsewhere: their help listed no flag at all.
    """
    if not module or module == "__main__":
        return
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Every entry point's ``absl.app.run``: one ``error:`` line for anything a user causes.

    Flag errors exit 2 before ``main`` runs (and before TensorFlow is imported);
    SIGTERM is an interrupt (exit 130, temporary files removed by ``finally``
    blocks); any other escaping exception goes through :func:`report`.
    """
    quiet_tensorflow_startup()  # TensorFlow's start-up notices, whenever it is imported
    install_sigterm_handler()
    show_flags_of(getattr(main, "__module__", None))
    try:
        app.run(guarded(main), argv=argv, flags_parser=parse_flags_or_fail)
    except KeyboardInterrupt:  # a signal after main returned, before the lines below
        report(KeyboardInterrupt())
    except SystemExit as done:
        finish(done.code)


def finish(code: Any) -> NoReturn:
    """End the process with ``code`` (``sys.exit``'s meaning), or with 130 and one line if
    a stop was asked for after the work.

    Why: Python's shutdown resets signal handlers to the default action, and TensorFlow's
    teardown can then take a second, so a SIGTERM landing after the work ended the process
    with -15 and no message. Here a signal is recorded while the exit functions run
    (logging, flushed writers), and then the process ends at once (``os._exit``), leaving
    no window without a handler. Every output is written, fsynced and closed by then.
    """
    late: list[int] = []
    record = lambda signum, frame: late.append(signum)  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, record)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        atexit._run_exitfuncs()  # what a normal exit would run: logging's flush, ...
    finally:
        if late and code == 0:
            global _signal_name
            _signal_name = signal.Signals(late[0]).name
            print(f"error: interrupted by {_signal_name} (after the work had finished: its "
                  "outputs are complete)", file=sys.stderr)
            code = EXIT_INTERRUPTED
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
