"""DFH through the shared loop: the stages (what each trains, resume across the boundary,
a lowest-loss checkpoint per stage), the harness rows, the command line (tiny widths, tiny
synthetic data).

Learning and the served export are checked for every registered method by
tests/methods/test_learning.py and tests/methods/test_served_export.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from method_cli import run_cli
from tiny_training import checkpoint_tensors, synthetic_split

from common.training.saved_run import load_run
from common.runs.checkpoints import store as checkpoints
from common.runs.run_config import RUN_CONFIG
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS, read_history
from dfh_tf.method import DFH, LOSS_PARTS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]
WIDTH = 0.125


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 identities x (6 train + 2 test)."""
    return synthetic_split(tmp_path_factory.mktemp("tiny") / "data", 4, 6, 2)


def _config(model_dir, epochs):
    return TrainConfig(epochs=epochs, model_dir=str(model_dir), batch_size=8, shuffle=True,
                       seed=3, eval_every=0, log_every_steps=0, deterministic=True)


def _method():
    return DFH(num_bits=12, width_multiplier=WIDTH, feature_units=32, feature_epochs=2)


# ---------------------------------------------------------------------------- the stages
def test_resume_across_the_stage_boundary_equals_the_straight_run(tiny_data, tmp_path):
    """Stopped after epoch 1 (stage 0) and after epoch 2 (the last of stage 0), resumed to
    4: weights, Adam state, batch-norm statistics and losses equal the straight run."""
    train(_method(), tiny_data, _config(tmp_path / "straight", 4))
    for epochs in (1, 2, 4):
        train(_method(), tiny_data, _config(tmp_path / "resumed", epochs))
    one = checkpoint_tensors(tmp_path / "straight")
    two = checkpoint_tensors(tmp_path / "resumed")
    assert sorted(one) == sorted(two)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    h1, h2 = read_history(str(tmp_path / "straight")), read_history(str(tmp_path / "resumed"))
    assert [h["stage"] for h in h1] == [h["stage"] for h in h2] == [0, 0, 1, 1]
    assert [(h["loss"], h["loss_parts"]) for h in h1] == [(h["loss"], h["loss_parts"])
                                                          for h in h2]
    for h in h1:
        assert set(h["loss_parts"]) == set(LOSS_PARTS)
        coded = [h["loss_parts"][k] for k in ("hash", "sign", "quantization", "distillation")]
        assert all(v == 0 for v in coded) if h["stage"] == 0 else all(v > 0 for v in coded)


def test_stage_zero_leaves_the_hash_layer_untouched(tiny_data, tmp_path):
    train(_method(), tiny_data, _config(tmp_path / "one", 1))
    train(_method(), tiny_data, _config(tmp_path / "two", 2))
    one, two = (load_run(DFH, str(tmp_path / d), "last").model for d in ("one", "two"))
    weights = lambda model, layer: model.get_layer(layer).get_weights()  # noqa: E731
    for layer in ("hash_dense", "code_classifier"):
        for w1, w2 in zip(weights(one, layer), weights(two, layer)):
            np.testing.assert_array_equal(w1, w2, err_msg=layer)
    assert not np.array_equal(weights(one, "feature_dense")[0], weights(two, "feature_dense")[0])


def test_lowest_loss_checkpoint_is_kept_per_stage(tiny_data, tmp_path):
    """Stage 1 adds terms, so its losses are higher: its first epoch still becomes
    best_loss (the lowest-loss state of the objective being trained), recorded with its
    stage; a resume keeps comparing within stage 1."""
    model_dir = tmp_path / "run"
    train(_method(), tiny_data, _config(model_dir, 3))
    history = read_history(str(model_dir))
    assert history[2]["loss"] > min(h["loss"] for h in history[:2])
    assert history[2]["best_loss"] is True
    best = checkpoints.read_index(str(model_dir))["slots"]["best_loss"]
    assert (best["epoch"], best["stage"]) == (3, 1)
    train(_method(), tiny_data, _config(model_dir, 4))
    history = read_history(str(model_dir))
    best = checkpoints.read_index(str(model_dir))["slots"]["best_loss"]
    assert history[3]["best_loss"] == (history[3]["loss"] < history[2]["loss"])
    assert best["epoch"] == (4 if history[3]["best_loss"] else 3) and best["stage"] == 1


def test_single_stage_methods_records_carry_no_stage(tiny_data, tmp_path):
    from ddch_tf.method import DDCH

    train(DDCH(num_bits=12, width_multiplier=WIDTH, feature_units=16, hash_hidden_units=16),
          tiny_data, _config(tmp_path / "ddch", 1))
    assert "stage" not in read_history(str(tmp_path / "ddch"))[0]


# ---------------------------------------------------------------------------- harness rows
def test_ablation_rows_replace_one_part_each():
    from common.reproduce.methods import check_methods, display_name, make_deep_method

    full = make_deep_method("dfh", 48, 0.25).config()
    assert full == DFH(num_bits=48, width_multiplier=0.25).config()
    for row, change in {"dfh_ce": {"hash_loss": "cross_entropy"},
                        "dfh_first_order": {"quantization": "first_order"},
                        "dfh_no_distillation": {"distillation_weight": 0.0},
                        "dfh_one_stage": {"feature_epochs": 0}}.items():
        assert make_deep_method(row, 48, 0.25).config() == {**full, **change}, row
        assert display_name(row).startswith("DFH")
    assert check_methods(["dfh_ce", "dcbh", "dfh"]) == ["dcbh", "dfh", "dfh_ce"]


# ---------------------------------------------------------------------------- command line
def test_train_evaluate_export_command_line(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli("dfh_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--num_bits", "12", "--width_multiplier", "0.125",
        "--feature_units", "16", "--feature_epochs", "1", "--hash_loss", "cross_entropy",
        "--quantization", "first_order", "--distillation_weight", "0.5",
        "--batch_size", "8", "--epochs", "2", "--eval_every", "0",
        "--model_dir", str(model_dir)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout and "distillation" in result.stdout
    config = json.load(open(model_dir / RUN_CONFIG))["method"]
    assert config == DFH(num_bits=12, width_multiplier=0.125, feature_units=16,
                         feature_epochs=1, hash_loss="cross_entropy",
                         quantization="first_order", distillation_weight=0.5).config()
    result = run_cli("dfh_tf.evaluate",
                     ["--model_dir", str(model_dir), "--checkpoint", "last",
                      "--output", str(tmp_path / "eval.json")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "eval.json").read_text())  # the state's figures, again
    assert figures["map"] == json.loads((model_dir / METRICS).read_text())["last"]["map"]
    assert f"mAP {figures['map']:.4f}" in result.stdout
    result = run_cli("dfh_tf.export", ["--model_dir", str(model_dir), "--checkpoint", "last",
                                       "--export_dir", str(tmp_path / "export")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "saved_model.pb").exists()
