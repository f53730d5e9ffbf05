"""One process per deep cell: the command that runs a cell alone, and running it.

Why: a cell trained inside the harness's process would share that process with
every cell before it (random generators, Keras and TensorFlow global state, op
determinism switched on and never off, traced functions and the memory they hold),
so its figure could depend on its place in the table. A fresh interpreter per deep
cell gives it exactly the state a lone run of its command has, and returns its
memory when it ends. The command is recorded in the cell's ``cell.json``, so any
figure of a table can be re-run alone.

Kept free of flag definitions and of TensorFlow: the harness imports it, and the
child's flags live in :mod:`common.reproduce.run_cell`, which only the child imports.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, TextIO

CHILD_MODULE = "common.reproduce.run_cell"
# The ReproduceConfig fields a cell's command passes as flags (all but out, methods, bits
# and seeds: a cell has one seed, passed as --seed).
CONFIG_FLAGS = ("epochs", "batch_size", "shuffle", "eval_every", "width_multiplier",
                "checkpoint", "top_k", "radius", "ties", "deterministic", "sparse_adam",
                "validation_fraction", "validation_seed")
# SplitData.description["synthetic"] keys passed as --synthetic_<key>.
SYNTHETIC_FLAGS = ("num_identities", "train_per_identity", "test_per_identity", "seed")
PARENT_PID_ENV = "FACE_HASHING_REPRODUCE_PARENT"  # set for a child the harness started
TAIL_LINES = 40
TERMINATE_WAIT_S = 60.0


class CellProcessError(RuntimeError):
    """A cell's own process failed; names the cell, its exit code, command and log tail."""

    def __init__(self, label: str, returncode: int, tail: list[str], command: str):
        self.label, self.returncode, self.tail, self.command = label, returncode, tail, command
        errors = [line for line in tail if line.startswith("error:")]
        why = errors[-1] if errors else (f"killed by signal {-returncode}" if returncode < 0
                                         else "no error line")
        self.headline = (f"cell {label} failed in its own process (exit code {returncode}): "
                         f"{why}; its log is above; re-run it alone with: {command}")
        super().__init__(self.headline + "\nlast lines of its log:\n" + "\n".join(tail))


def _flag(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={value}"


def data_flags(description: dict[str, Any]) -> list[str]:
    """Flags that make the child load the data the harness loaded (absolute folders).

    Raises:
        ValueError: ``description`` does not name the data set and its folders (a
            SplitData not made by ``load_split_data``): a child could not load it.
    """
    dataset = description.get("dataset")
    train_dir, test_dir = description.get("train_dir"), description.get("test_dir")
    if not (dataset and train_dir and test_dir):
        raise ValueError("deep cells run in their own processes, which load the data "
                         "themselves: the data's description must name dataset, train_dir and "
                         "test_dir (as common.training.data.load_split_data records)")
    flags = [_flag("dataset", dataset)]
    if dataset == "synthetic":  # regenerated identically where absent; checked where present
        flags.append(_flag("data_dir", os.path.dirname(train_dir)))
        synthetic = description.get("synthetic", {})
        flags += [_flag(f"synthetic_{k}", synthetic[k]) for k in SYNTHETIC_FLAGS if k in synthetic]
    flags += [_flag("train_dir", train_dir), _flag("test_dir", test_dir)]
    if description.get("extra_train_dir"):
        flags.append(_flag("extra_train_dir", description["extra_train_dir"]))
    return flags


def cell_argv(config, method: str, bits: int, description: dict[str, Any],
              python: str | None = None, seed: int | None = None) -> list[str]:
    """The command line that runs exactly this cell (``seed``: default the config's
    first), alone, into ``config.out``."""
    if seed is None:
        seed = config.seeds[0] if config.seeds else config.seed
    argv = [python or sys.executable, "-m", CHILD_MODULE,
            _flag("out", os.path.abspath(config.out)), _flag("method", method),
            _flag("bits", int(bits)), _flag("seed", int(seed)), *data_flags(description)]
    return argv + [_flag(name, getattr(config, name)) for name in CONFIG_FLAGS]


def command_record(argv: list[str]) -> dict[str, Any]:
    """What ``cell.json`` keeps: the argv list, the same as one shell line, where it ran."""
    return {"argv": list(argv), "shell": shlex.join(argv), "cwd": package_root()}


def package_root() -> str:
    """The folder holding the ``common`` package (the child imports this very code)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env() -> dict[str, str]:
    """The parent's environment, plus this code on the path and unbuffered output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{PARENT_PID_ENV: str(os.getpid())})
    paths = [package_root(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (the child stops cleanly, as on Ctrl-C), then SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=TERMINATE_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _SigtermAsInterrupt:
    """While running a child, SIGTERM raises KeyboardInterrupt (if nobody handles it yet),
    so the child is terminated instead of being orphaned by the parent's sudden death."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def run_cell_process(argv: list[str], label: str, log: TextIO | None = None) -> None:
    """Run one cell's command in a fresh interpreter, streaming its log lines to ``log``.

    Raises:
        CellProcessError: the child exited non-zero (message: cell, exit code, the
            child's ``error:`` line, its command and the last lines of its log).
        KeyboardInterrupt: Ctrl-C or SIGTERM here; the child was terminated first.
    """
    log = log or sys.stderr
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with _SigtermAsInterrupt():
        proc = subprocess.Popen(argv, cwd=package_root(), env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
        assert proc.stdout is not None  # stdout=PIPE
        try:
            _stream(proc.stdout, log, tail)
            returncode = proc.wait()
        except BaseException:
            _terminate(proc)
            raise
        finally:
            proc.stdout.close()
    if returncode != 0:
        raise CellProcessError(label, returncode, list(tail), shlex.join(argv))


def _stream(lines: Iterable[str], log: TextIO, tail: collections.deque) -> None:
    for line in lines:
        log.write(line)
        log.flush()
        tail.append(line.rstrip("\n"))


def watch_parent() -> None:
    """In a child the harness started: stop (as on SIGTERM) if the harness dies.

    A harness killed outright (SIGKILL, out of memory) cannot terminate its child;
    without this the child would train on alone, holding the cell's lock.
    """
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not expected.isdigit():
        return

    def watch():
        while os.getppid() == int(expected):
            time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
