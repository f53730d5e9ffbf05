"""Each deep cell of the table runs in a process of its own (issue 16).

A cell's result must depend only on its settings: run after other cells in one harness
call, or alone from the command its cell.json records, it gives the same codes; a cell
whose process fails stops the harness with one error naming it; an interrupted harness
takes its cell's process down with it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.reproduce import cells as cells_module
from common.reproduce import isolation
from common.reproduce.layout import CELL_FILE, CODES_FILE, cell_dir
from common.reproduce.harness import RESULTS_MD, ReproduceConfig, reproduce
from common.reproduce.isolation import CellProcessError, run_cell_process
from common.runs.checkpoints.store import read_index
from common.training.data import load_split_data

pytestmark = pytest.mark.slow  # trains models or starts processes

SYNTHETIC = dict(num_identities=6, train_per_identity=8, test_per_identity=3)


def _config(out, **kwargs) -> ReproduceConfig:
    settings = dict(out=str(out), methods=["dcbh", "ddh", "lsh"], bits=[8], epochs=2,
                    batch_size=16, eval_every=0, width_multiplier=0.0625, deterministic=True)
    settings.update(kwargs)
    return ReproduceConfig(**settings)


def _run_alone(command: dict, out) -> None:
    """Execute a recorded command as a reader would, with another --out."""
    argv = [f"--out={out}" if a.startswith("--out=") else a for a in command["argv"]]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(argv, cwd=out.parent, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _codes(out, method: str, bits: int):
    return np.load(os.path.join(cell_dir(str(out), method, bits), CODES_FILE))


def _losses(out, method: str, bits: int) -> list[tuple]:
    with open(os.path.join(cell_dir(str(out), method, bits), "run", "history.jsonl")) as f:
        return [(e["epoch"], e["loss"], e["test_loss"]) for e in map(json.loads, f)]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """One harness call (DCBH, then DDH after it, then LSH), every child process counted."""
    root = tmp_path_factory.mktemp("iso")
    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC)
    started = []

    def counted(argv, label, log=None):
        started.append(label)
        return run_cell_process(argv, label, log)

    def not_here(*args, **kwargs):
        raise AssertionError("a deep cell was trained in the harness's own process")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(isolation, "run_cell_process", counted)
        patch.setattr(cells_module, "_deep_codes", not_here)
        cells = reproduce(_config(root / "table"), data)
    return root, cells, started


def test_every_deep_cell_runs_in_a_process_of_its_own(table):
    _, cells, started = table
    assert started == ["dcbh 8 bits", "ddh 8 bits"]  # the baseline stays in the harness
    for (method, bits, seed), cell in cells.items():
        argv = cell["command"]["argv"]
        assert argv[:3] == [sys.executable, "-m", "common.reproduce.run_cell"]
        assert {f"--method={method}", f"--bits={bits}", f"--seed={seed}",
                "--deterministic"} <= set(argv)
        assert cell["command"]["shell"].split()[:3] == argv[:3]


def test_a_cell_run_alone_gives_the_codes_it_gave_after_other_cells(table):
    """DDH 8 ran after DCBH 8 in the harness; alone, from its recorded command, it must
    train through the same losses to the same codes (DDH: its codes are not all equal)."""
    root, cells, _ = table
    alone = root / "alone_ddh"
    _run_alone(cells["ddh", 8, 0]["command"], alone)
    ours, theirs = _codes(root / "table", "ddh", 8), _codes(alone, "ddh", 8)
    assert len(np.unique(ours["db_codes"], axis=0)) > 1
    for key in ours.files:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert _losses(root / "table", "ddh", 8) == _losses(alone, "ddh", 8)
    with open(os.path.join(cell_dir(str(alone), "ddh", 8), CELL_FILE)) as f:
        assert json.load(f)["figures"] == cells["ddh", 8, 0]["figures"]


def test_a_baseline_cells_recorded_command_reproduces_it(table):
    root, cells, _ = table
    alone = root / "alone_lsh"
    _run_alone(cells["lsh", 8, 0]["command"], alone)
    ours, theirs = _codes(root / "table", "lsh", 8), _codes(alone, "lsh", 8)
    for key in ours.files:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_results_md_says_how_cells_ran_and_how_far_a_rerun_may_differ(table):
    root, _, _ = table
    text = (root / "table" / RESULTS_MD).read_text()
    assert "## Reproducibility" in text
    assert "in a process of its own" in text and "python -m common.reproduce.run_cell" in text
    assert "ran with `--deterministic`" in text and "bit-identical" in text
    assert "deterministic: True" in text


def test_a_failing_cell_stops_the_harness_with_one_error_naming_it(tmp_path, monkeypatch):
    data = load_split_data("synthetic", str(tmp_path / "data"), synthetic_kwargs=SYNTHETIC)
    shutil.rmtree(tmp_path / "data" / "train")  # the child cannot load what the parent did
    started = []

    def counted(argv, label, log=None):
        started.append(label)
        return run_cell_process(argv, label, log)

    monkeypatch.setattr(isolation, "run_cell_process", counted)
    with pytest.raises(CellProcessError) as caught:
        reproduce(_config(tmp_path / "out", methods=["dcbh"], bits=[8, 12]), data)
    error = caught.value
    assert started == ["dcbh 8 bits"]  # stopped at the first failure
    assert error.returncode == 2
    assert error.headline.startswith("cell dcbh 8 bits failed in its own process (exit code 2)")
    assert "error:" in error.headline and str(tmp_path / "data") in error.headline
    assert "common.reproduce.run_cell" in error.headline and "--method=dcbh" in error.headline
    assert "last lines of its log:" in str(error) and error.tail
    assert not (tmp_path / "out" / RESULTS_MD).exists()


def test_an_interrupted_cell_continues_from_its_last_epoch_on_the_next_call(table, tmp_path,
                                                                           monkeypatch):
    """The child is killed (kill -9) after saving epoch 1; the same call again resumes it
    from there, to the codes of the uninterrupted cell in ``table``."""
    root, cells, _ = table
    data = load_split_data("synthetic", str(tmp_path / "data"), synthetic_kwargs=SYNTHETIC)
    config = dict(methods=["ddh"], bits=[8])
    monkeypatch.setenv("FACE_HASHING_CRASH_AT", "train:saved@1")
    with pytest.raises(CellProcessError, match="killed by signal 9"):
        reproduce(_config(tmp_path / "out", **config), data)
    run = os.path.join(cell_dir(str(tmp_path / "out"), "ddh", 8), "run")
    assert read_index(run)["slots"]["last"]["epoch"] == 1
    monkeypatch.delenv("FACE_HASHING_CRASH_AT")
    again = reproduce(_config(tmp_path / "out", **config), data)
    assert _losses(tmp_path / "out", "ddh", 8) == _losses(root / "table", "ddh", 8)
    ours, theirs = _codes(tmp_path / "out", "ddh", 8), _codes(root / "table", "ddh", 8)
    for key in ours.files:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    assert again["ddh", 8, 0]["figures"] == cells["ddh", 8, 0]["figures"]


def test_a_child_killed_by_a_signal_is_reported_as_such():
    argv = [sys.executable, "-c", "import os, signal; print('working', flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(CellProcessError, match=r"exit code -9\): killed by signal 9") as caught:
        run_cell_process(argv, "dcbh 48 bits", log=io.StringIO())
    assert caught.value.tail == ["working"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_harness_terminates_its_cells_process(sig):
    """SIGTERM or Ctrl-C while a cell runs: the harness stops, and the child with it."""
    argv = [sys.executable, "-c", "import os, time; print('pid', os.getpid(), flush=True); "
            "time.sleep(300)"]
    seen = []

    class Log:
        def write(self, line):
            seen.append(line)
            if line.startswith("pid"):
                os.kill(os.getpid(), sig)  # as a user or a job scheduler would

        def flush(self):
            pass

    before = signal.getsignal(signal.SIGTERM)
    # The harness's command runs with Python's own Ctrl-C handler; set it here rather than
    # rely on what earlier tests in this process left (seen once in a full suite run on a
    # loaded machine: SIGINT did not interrupt and the child slept its 300 s; the cause was
    # not found, the test passes alone and with its neighbours).
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_cell_process(argv, "dcbh 48 bits", log=Log())
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
    child = int(seen[0].split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # terminated and reaped
    assert signal.getsignal(signal.SIGTERM) == before


def test_cell_command_names_the_data_folders_and_every_setting(tmp_path):
    config = _config(tmp_path / "out", deterministic=False, shuffle=False)
    description = {"dataset": "folder", "train_dir": "/d/train", "test_dir": "/d/test"}
    argv = isolation.cell_argv(config, "ddch", 24, description, python="python")
    assert argv[:5] == ["python", "-m", "common.reproduce.run_cell",
                        f"--out={tmp_path / 'out'}", "--method=ddch"]
    assert {"--bits=24", "--seed=0", "--dataset=folder", "--train_dir=/d/train",
            "--test_dir=/d/test", "--noshuffle", "--nodeterministic",
            "--width_multiplier=0.0625", "--validation_fraction=0.1",
            "--validation_seed=0"} <= set(argv)
    assert len(argv) == 7 + 3 + len(isolation.CONFIG_FLAGS)
    with pytest.raises(ValueError, match="description must name"):
        isolation.cell_argv(config, "ddch", 24, {"dataset": "folder"})


def test_a_cell_command_passes_the_extra_training_rows_on(tmp_path):
    config = _config(tmp_path / "out")
    description = {"dataset": "folder", "train_dir": "/d/train", "test_dir": "/d/test",
                   "extra_train_dir": "/d/variants"}
    argv = isolation.cell_argv(config, "ddch", 24, description, python="python")
    assert "--extra_train_dir=/d/variants" in argv
    assert len(argv) == 7 + 4 + len(isolation.CONFIG_FLAGS)
    del description["extra_train_dir"]
    assert not any(a.startswith("--extra_train_dir") for a in
                   isolation.cell_argv(config, "ddch", 24, description, python="python"))
