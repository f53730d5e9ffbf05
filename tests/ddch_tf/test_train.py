"""DDCH through the shared machinery: resume, command lines (tiny synthetic data, narrow
backbones).

Learning and the served export are checked for every registered method by
tests/methods/test_learning.py and tests/methods/test_served_export.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from method_cli import ROOT, run_cli
from tiny_training import checkpoint_tensors, synthetic_split

from common.export.folder import EXPORT_INFO
from common.runs.checkpoints import store as checkpoints
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS
from ddch_tf.method import DDCH

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


def test_resumed_run_equals_uninterrupted_run(tmp_path, op_determinism):
    data = synthetic_split(tmp_path / "data", 8, 6, 2)     # 3 steps of 16 per epoch

    def method():
        return DDCH(num_bits=12, feature_units=24, hash_hidden_units=20, width_multiplier=0.0625)

    def config(model_dir, epochs):
        return TrainConfig(epochs=epochs, model_dir=str(model_dir), batch_size=16, eval_every=0,
                           log_every_steps=0, shuffle=True, seed=3, deterministic=True)

    train(method(), data, config(tmp_path / "straight", 2))
    train(method(), data, config(tmp_path / "resumed", 1))
    assert checkpoints.read_index(str(tmp_path / "resumed"))["slots"]["last"]["epoch"] == 1
    after_one = checkpoint_tensors(tmp_path / "resumed")
    report = train(method(), data, config(tmp_path / "resumed", 2))  # fresh model + method
    assert report["epochs_completed"] == 2
    epochs_trained = [json.loads(line)["epoch"]
                      for line in open(tmp_path / "resumed" / "history.jsonl")]
    assert epochs_trained == [1, 2]  # the second call trained epoch 2 only

    straight = checkpoint_tensors(tmp_path / "straight")
    resumed = checkpoint_tensors(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    names = list(straight)
    # Both center sets (8 classes x 24 features, 8 x 12 bits), each with its two Adam
    # moments; no other variable has these shapes.
    feature_centers = [n for n in names if straight[n].shape == (8, 24)]
    code_centers = [n for n in names if straight[n].shape == (8, 12)]
    assert len(feature_centers) == 3 and len(code_centers) == 3
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    trainable = sum("optimizer/_trainable_variables" in n for n in names)
    assert sum("optimizer/_variables" in n for n in names) == 2 * trainable > 20
    for name in names:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    # ... and training went on after the resume: the centers are not those of epoch 1.
    for name in feature_centers + code_centers:
        assert not np.array_equal(after_one[name], resumed[name]), name
    assert int(straight["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 6
    assert int(straight["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == 2


# --------------------------------------------------------------------------- command lines
def test_train_and_export_command_lines(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli("ddch_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "6", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--width_multiplier", "0.0625",
        "--num_bits", "12", "--feature_units", "16", "--hash_hidden_units", "16",
        "--code_center_weight", "0.01", "--batch_size", "8", "--epochs", "2",
        "--max_steps_per_epoch", "2", "--eval_every", "0", "--model_dir", str(model_dir)],
        tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout
    metrics = json.load(open(model_dir / METRICS))
    assert metrics["method"]["method"] == "ddch"
    assert metrics["epochs_completed"] == 2
    assert metrics["method"]["num_bits"] == 12 and metrics["method"]["feature_units"] == 16
    assert metrics["method"]["code_center_weight"] == 0.01
    assert metrics["num_classes"] == 6 and metrics["dataset"] == "synthetic"
    index = checkpoints.read_index(str(model_dir))
    assert index["slots"]["last"]["optimizer_iterations"] == 4   # 2 epochs x 2 steps

    out = tmp_path / "export"
    result = run_cli("ddch_tf.export", ["--model_dir", str(model_dir), "--export_dir", str(out),
                                        "--checkpoint", "last"], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"to {out}" in result.stdout and "12 bits" in result.stdout
    with open(out / EXPORT_INFO) as f:
        info = json.load(f)
    assert info["method"]["method"] == "ddch" and info["checkpoint"]["slot"] == "last"
    assert os.path.exists(out / "saved_model.pb")

    wrong = tmp_path / "wrong"
    result = run_cli("dcbh_tf.export",
                     ["--model_dir", str(model_dir), "--export_dir", str(wrong)], ROOT)
    assert result.returncode == 2
    assert "holds a 'ddch' run" in result.stderr and "ddch_tf.export" in result.stderr
    assert "Traceback" not in result.stderr
    assert not wrong.exists()
