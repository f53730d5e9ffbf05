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
free of TensorFlow: error classes are looked up only in modules already imported.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import signal
import sys
import traceback
from typing import Any, Callable, NoReturn

from absl import app, flags

from common.tf_startup import quiet_tensorflow_startup

EXIT_USAGE = 2        # bad flags, bad data, a run folder that does not fit
EXIT_FAILED = 1       # the work itself failed (e.g. non-finite loss), or a bug
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (both raise KeyboardInterrupt)
TRACEBACK_ENV = "FACE_HASHING_TRACEBACK"

# Upper bounds of the flags that size memory or work, checked while flags are parsed.
MAX_BITS = 1024               # the methods are meant for 12..48 bits
MAX_UNITS_PER_BIT = 64        # DCBH --code_length, DDH --split_num (the papers: 4..6)
MAX_HIDDEN_UNITS = 8192       # DDCH --feature_units, --hash_hidden_units (paper: 512)
MAX_WIDTH_MULTIPLIER = 8.0    # backbone channels x8 = 4096 in its last block
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 10**6
MAX_TOP_K = 10**7             # more than any database here (YouTube Faces: 63,800)
MAX_SEED = 2**32 - 1          # numpy's global seed range (keras.utils.set_random_seed)
BYTES_PER_IMAGE = 12 * 1024   # one float32 32x32x3 image in memory
WHY_BITS = "the methods are meant for 12 to 48 bits; wider codes need layers that exhaust memory"
WHY_UNITS = "a wider layer exhausts memory"
WHY_WIDTH = "the original is 1.0; a wider backbone exhausts memory"

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


def check_no_arguments(argv: list[str]) -> None:
    """Reject positional arguments (absl passes them through to ``main``)."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (all settings are --flags)")


# ------------------------------------------------------------ bounds, checked early
def bound_flag(name: str, upper: float, why: str) -> None:
    """Refuse ``--name`` above ``upper`` at parse time, saying ``why`` (exit 2)."""
    shown = str(int(upper)) if float(upper).is_integer() else repr(upper)
    flags.register_validator(name, lambda v: v is None or v <= upper,
                             message=f"--{name} must be <= {shown} ({why})")


def finite_flag(name: str) -> None:
    """Refuse ``--name nan`` / ``inf`` at parse time (they only surface as a NaN loss)."""
    flags.register_validator(name, lambda v: v is None or math.isfinite(v),
                             message=f"--{name} must be a finite number")


def physical_memory_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def image_memory_error(images: int) -> str | None:
    """Why ``images`` float32 images would not fit in half of this machine's memory."""
    memory = physical_memory_bytes()
    need = images * BYTES_PER_IMAGE
    if memory is None or need <= memory // 2:
        return None
    return (f"{images:,} images need about {need / 2**30:,.1f} GiB in memory (12 KiB each), "
            f"more than half of this machine's {memory / 2**30:,.1f} GiB")


def check_folder_flag(flag: str, path: str | None) -> None:
    """Refuse a folder flag that names a file or lies under one, before any work."""
    if not path:
        return
    if os.path.lexists(path) and not os.path.isdir(path):
        fail(f"--{flag} {path}: exists and is not a folder")
    _check_parents(flag, path)


def check_file_flag(flag: str, path: str | None) -> None:
    """Refuse an output-file flag that names a folder or lies under a file."""
    if not path:
        return
    if os.path.isdir(path):
        fail(f"--{flag} {path}: is a folder, not a file")
    _check_parents(flag, path)


def _check_parents(flag: str, path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        fail(f"--{flag} {path}: {parent} is a file, not a folder")


# --------------------------------------------------------- exceptions -> one line
def _loaded(module: str, name: str) -> type | None:
    """Class ``module.name`` if that module is already imported (never imports it)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _project_errors() -> tuple[list[type], list[type]]:
    """(errors meaning bad input: exit 2, errors meaning the work failed: exit 1)."""
    usage = [_loaded("common.data.errors", "DataFormatError"),
             _loaded("common.data", "DataFormatError"),
             _loaded("common.saved_run", "RunFolderError"),
             _loaded("common.training.checkpoints", "CheckpointError"),
             _loaded("common.training.checkpoints", "RunLockedError"),
             _loaded("common.training.loop", "RunConfigMismatchError"),
             _loaded("common.reproduce.cells", "CellSettingsError")]
    failed = [_loaded("common.training.loop", "NonFiniteLossError")]
    return [c for c in usage if c], [c for c in failed if c]


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


def _memory(exc: BaseException) -> str:
    detail = one_line(str(exc)) or "the inputs need more memory than this machine has"
    return f"out of memory: {detail}"


def user_error(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code of an error a user's input can cause.

    None for anything else (a bug). The project's own errors come first, then
    TensorFlow's (damaged checkpoint, missing file, out of memory), malformed JSON,
    undecodable text, memory and OS errors.
    """
    from common.errors import ProjectError
    if isinstance(exc, ProjectError):
        return str(exc), exc.exit_code
    usage, failed = _project_errors()
    if isinstance(exc, tuple(failed)):
        return str(exc), EXIT_FAILED
    if isinstance(exc, tuple(usage)):
        return str(exc), EXIT_USAGE
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
        return _memory(exc), EXIT_USAGE
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOMEM:
            return _memory(exc), EXIT_USAGE
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


def guarded(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """``main`` whose every escaping exception becomes one ``error:`` line."""
    def run(argv: list[str]) -> Any:
        try:
            return main(argv)
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - the last resort, by design
            report(exc)
    return run


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Every entry point's ``absl.app.run``: one ``error:`` line for anything a user causes.

    Flag errors exit 2 before ``main`` runs (and before TensorFlow is imported);
    SIGTERM is an interrupt (exit 130, temporary files removed by ``finally``
    blocks); any other escaping exception goes through :func:`report`.
    """
    quiet_tensorflow_startup()  # TensorFlow's start-up notices, whenever it is imported
    install_sigterm_handler()
    app.run(guarded(main), argv=argv, flags_parser=parse_flags_or_fail)
