"""Crash consistency: kill -9 at every instant that matters, resume, compare with a clean run.

The training command is killed (SIGKILL, via common.io.faults crash points) between
writing a state and naming it, after naming it, between a checkpoint and its
history line, inside evaluations and before the final report; the export command
between writing and swapping in a new export. After each kill the same command is
run again; every slot (its epoch, every tensor, its evaluation), the history and
the report must then equal those of a run that was never interrupted, and the
export must serve the same codes. Deterministic ops make "equal" bit-exact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from checkout import ROOT
from common.io.faults import ENV as CRASH_ENV
from common.runs.checkpoints import store as checkpoints
from common.training.reporting import METRICS, read_history

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
ENV.pop(CRASH_ENV, None)
EPOCHS = 3
METRIC_KEYS = ("map", "precision_at_k", "precision_within_radius", "recall_within_radius",
               "evaluated_at_epoch")

# point@n: the n-th time the point is reached (3 epochs, evaluation after every epoch:
# states are saved at epochs 1, 2, 3; indexes are written by saves and evaluations).
TRAIN_CRASHES = [
    "checkpoint:renamed@1",   # epoch 1's state written, not yet named: nothing to resume
    "checkpoint:renamed@2",   # epoch 2's state orphaned
    "checkpoint:indexed@3",   # an index switched, stale states not yet collected
    "train:saved@2",          # epoch 2 saved, its history line not yet written
    "eval:computed@2",        # inside an evaluation: figures computed, not recorded
    "eval:annotated@3",       # figures recorded, best_map not yet pointed
    "train:report@1",         # everything done but metrics.json
]


def _train_command(data_dir, model_dir) -> list[str]:
    return [sys.executable, "-m", "dcbh_tf.train", "--dataset", "synthetic",
            "--data_dir", str(data_dir), "--synthetic_identities", "6",
            "--synthetic_train_per_identity", "8", "--synthetic_test_per_identity", "2",
            "--epochs", str(EPOCHS), "--batch_size", "16", "--width_multiplier", "0.0625",
            "--num_bits", "12", "--code_length", "3", "--eval_every", "1", "--deterministic",
            "--shuffle", "--seed", "1", "--log_every_steps", "0", "--model_dir", str(model_dir)]


def _run(command, crash_at=None):
    env = dict(ENV, **({CRASH_ENV: crash_at} if crash_at else {}))
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def _slot_snapshot(model_dir) -> dict:
    """Per slot: epoch, evaluation figures and every checkpoint tensor."""
    index = checkpoints.read_index(str(model_dir))
    snapshot = {}
    for slot, record in index["slots"].items():
        reader = tf.train.load_checkpoint(
            os.path.join(str(model_dir), "checkpoints", record["dir"], "ckpt"))
        tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                   if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}
        metrics = {k: (record.get("metrics") or {}).get(k) for k in METRIC_KEYS}
        snapshot[slot] = (record["epoch"], metrics, tensors)
    return snapshot


def _history(model_dir) -> list[tuple]:
    return [(h["epoch"], h["loss"], h["test_loss"], h["best_loss"])
            for h in read_history(str(model_dir))]


def _report(model_dir) -> dict:
    with open(os.path.join(str(model_dir), METRICS), encoding="utf-8") as f:
        report = json.load(f)
    return {slot: report[slot] for slot in ("last", "best_loss", "best_map")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    data_dir, model_dir = root / "data", root / "straight"
    result = _run(_train_command(data_dir, model_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, data_dir, model_dir


@pytest.mark.parametrize("crash_at", TRAIN_CRASHES)
def test_training_killed_anywhere_resumes_to_the_uninterrupted_result(reference, crash_at):
    root, data_dir, straight = reference
    model_dir = root / crash_at.replace(":", "_").replace("@", "_")
    killed = _run(_train_command(data_dir, model_dir), crash_at)
    assert killed.returncode == -signal.SIGKILL, (
        f"the crash point {crash_at} was not reached:\n{killed.stderr[-2000:]}")
    resumed = _run(_train_command(data_dir, model_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, got = _slot_snapshot(straight), _slot_snapshot(model_dir)
    assert got.keys() == expected.keys() == {"last", "best_loss", "best_map"}
    for slot, (epoch, metrics, tensors) in expected.items():
        assert got[slot][0] == epoch, slot
        assert got[slot][1] == metrics, slot
        assert got[slot][2].keys() == tensors.keys()
        for name, value in tensors.items():
            np.testing.assert_array_equal(got[slot][2][name], value, err_msg=f"{slot} {name}")
    assert _history(model_dir) == _history(straight)
    assert _report(model_dir) == _report(straight)
    # Nothing left behind: every state folder is named by a slot, no temporary file.
    live = {r["dir"] for r in checkpoints.read_index(str(model_dir))["slots"].values()}
    leftovers = set(os.listdir(model_dir / "checkpoints")) - live - {"index.json"}
    assert not leftovers


def _export_command(model_dir, export_dir) -> list[str]:
    return [sys.executable, "-m", "dcbh_tf.export", "--model_dir", str(model_dir),
            "--export_dir", str(export_dir)]


def test_export_killed_mid_swap_leaves_a_complete_export_and_redoes_to_the_same_codes(
        reference):
    """Kill between the swap and the clean-up (the other instants:
    tests/common/export/test_export_safety.py)."""
    from common.export.loader import load_encoder

    root, _, straight = reference
    export_dir = root / "export"
    assert _run(_export_command(straight, export_dir)).returncode == 0  # a previous export
    images = np.random.default_rng(3).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    expected = load_encoder(str(export_dir))(images)
    killed = _run(_export_command(straight, export_dir), "export:swapped")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    survived = load_encoder(str(export_dir))(images)  # complete: the old or the new one
    again = _run(_export_command(straight, export_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    redone = load_encoder(str(export_dir))(images)
    for key in ("codes", "packed", "relaxed"):
        np.testing.assert_array_equal(survived[key], expected[key], err_msg=key)
        np.testing.assert_array_equal(redone[key], expected[key], err_msg=key)
    assert not [e for e in os.listdir(root) if e.startswith(".export")]
