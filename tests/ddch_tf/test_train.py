"""DDCH through the shared machinery: learning, resume, export, command lines.

Everything here runs on tiny synthetic data and narrow backbones; the learned run is
shared by the learning and the export test.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fresh_process import assert_served_codes, serve_in_fresh_process
from method_cli import ROOT, run_cli
from tiny_training import chance_map, checkpoint_tensors, synthetic_split

from common.export.folder import EXPORT_INFO
from common.training.saved_run import export_run, load_run
from common.runs.checkpoints import store as checkpoints
from common.runs.run_config import RUN_CONFIG
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS, read_history
from ddch_tf.method import DDCH

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]
@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    """8 identities x (20 train + 4 test)."""
    return synthetic_split(tmp_path_factory.mktemp("learn") / "data", 8, 20, 4)


@pytest.fixture(scope="module")
def learned_run(learn_data, tmp_path_factory):
    """12 epochs of 5 steps, DDCH defaults (48 bits) on a 0.125-wide backbone.

    Measured (seeds 0-4, this configuration): final mAP 0.726, 0.832, 0.752, 0.729, 0.744
    (best_map = last, epoch 12 every time); train loss from 4.7-5.3 at epoch 1 to
    0.156-0.163 at epoch 12; train accuracy 1.0. Chance mAP: 0.15.
    """
    model_dir = tmp_path_factory.mktemp("learned") / "run"
    config = TrainConfig(epochs=12, model_dir=str(model_dir), batch_size=32, eval_every=4,
                         log_every_steps=0)
    report = train(DDCH(width_multiplier=0.125), learn_data, config)
    return model_dir, report


# --------------------------------------------------------------------------- learning
def test_short_training_lowers_the_loss_and_beats_chance(learned_run, learn_data):
    model_dir, report = learned_run
    history = read_history(str(model_dir))
    assert [h["epoch"] for h in history] == list(range(1, 13))
    losses = [h["loss"] for h in history]
    assert losses[-1] < losses[0]
    assert losses[-1] < 0.2 * losses[0], losses          # measured: ~0.03 x
    for h in (history[0], history[-1]):
        assert set(h["loss_parts"]) == {"classification", "feature_classification", "quantization",
                                        "feature_center", "code_center", "regularization"}
        assert sum(h["loss_parts"].values()) == pytest.approx(h["loss"], rel=1e-5)
    assert history[-1]["accuracy"] > 0.8                 # measured: 1.0
    # Chance: the exact expected mAP of a random ranking (every code equal, random ties).
    chance = chance_map(learn_data)
    assert 0.1 < chance < 0.2
    assert report["best_map"]["map"] > 0.5, (report["best_map"]["map"], chance)  # measured >= 0.72
    assert report["best_map"]["map"] >= max(report["last"]["map"], report["best_loss"]["map"])

    metrics = json.load(open(model_dir / METRICS))
    assert metrics["method"]["method"] == "ddch"
    run_config = json.load(open(model_dir / RUN_CONFIG))
    assert run_config["method"] == DDCH(width_multiplier=0.125).config()
    assert run_config["num_classes"] == 8


# --------------------------------------------------------------------------- resume
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


# --------------------------------------------------------------------------- export
def test_exported_saved_model_serves_the_keras_codes_in_a_fresh_process(learned_run, tmp_path):
    model_dir, report = learned_run
    export_dir = tmp_path / "ddch_export"
    info = export_run(DDCH, str(model_dir), str(export_dir), "best_map")
    assert info["method"]["method"] == "ddch" and info["num_bits"] == 48
    assert info["num_classes"] == 8
    assert info["checkpoint"]["epoch"] == report["best_map"]["epoch"]
    with open(export_dir / EXPORT_INFO) as f:
        assert json.load(f) == info

    raw = np.random.default_rng(7).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    served = serve_in_fresh_process(export_dir, raw, tmp_path)

    run = load_run(DDCH, str(model_dir), "best_map")
    x = run.normalization.apply(raw.astype(np.float32))
    outputs = dict(zip(DDCH.output_names, (np.asarray(o) for o in run.model(x, training=False))))
    relaxed = outputs["relaxed_codes"]
    expected = np.where(relaxed >= 0, 1, -1).astype(np.int8)
    np.testing.assert_array_equal(outputs["codes"], expected)      # the model's own codes
    assert served["codes"].shape == (9, 48)
    assert (expected == 1).any() and (expected == -1).any()
    assert_served_codes(served, relaxed, atol=1e-6)


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
