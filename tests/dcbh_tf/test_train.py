"""``python -m dcbh_tf.train``: one clear message for bad input, a full run end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from method_cli import run_cli

from common.data import write_pickle_folder


def _split(folder, labels):
    x = np.random.default_rng(0).uniform(0, 255, (len(labels), 3072)).astype(np.float32)
    write_pickle_folder(folder, x, np.asarray(labels, np.int64))


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    _split(root / "train_folder_facescrub", [0, 1, 700])  # FaceScrub has 530 classes
    _split(root / "test_folder_facescrub", [0, 1])
    (root / "corrupt").mkdir()
    (root / "corrupt" / "part_000.pkl").write_bytes(b"\x80\x04not a pickle")
    _split(root / "good", [0, 1, 1, 0])
    return root


# The bad values of the method's own flags and of --batch_size are checked for every
# method by tests/methods/test_train_command.py; these are the data and command-line cases.
BAD_INPUT = {
    "epochs_zero": (["--epochs", "0"], "--epochs=0"),
    "negative_learning_rate": (["--learning_rate", "-1"], "--learning_rate must be > 0"),
    "unknown_dataset": (["--dataset", "celeba"], "youtube_faces|facescrub|folder|synthetic"),
    "bad_hamming": (["--hamming", "fuzzy"], "exact|legacy"),
    "folder_without_dirs": (["--dataset", "folder"], "needs both --train_dir and --test_dir"),
    "missing_folder": (["--dataset", "youtube_faces", "--data_dir", "{root}/nowhere"],
                       "train_vec_folder_32_32: folder does not exist"),
    "class_count_mismatch": (["--dataset", "facescrub", "--data_dir", "{root}"],
                             "train_folder_facescrub: label 700 is out of range"),
    "corrupt_file": (["--dataset", "folder", "--train_dir", "{root}/corrupt", "--test_dir",
                      "{root}/good"], "corrupt/part_000.pkl"),
    "synthetic_flag_elsewhere": (["--dataset", "facescrub", "--synthetic_identities", "5"],
                                 "only apply to --dataset synthetic"),
    "positional_argument": (["train"], "unexpected arguments: train"),
    # settings that would be silently ignored are refused
    "data_dir_with_folder": (["--dataset", "folder", "--train_dir", "{root}/good", "--test_dir",
                              "{root}/good", "--data_dir", "{root}"],
                             "--data_dir is not read with --dataset folder"),
    "folders_with_synthetic": (["--train_dir", "{root}/good", "--test_dir", "{root}/good"],
                               "the synthetic set is its own"),
    "validation_seed_without_split": (["--validation_seed", "3"],
                                      "--validation_seed needs --validation_fraction > 0"),
    "extra_rows_beyond_the_classes": (["--dataset", "folder", "--train_dir", "{root}/good",
                                       "--test_dir", "{root}/good", "--extra_train_dir",
                                       "{root}/train_folder_facescrub"],
                                      "train_folder_facescrub: label 700 is out of range"),
    "missing_extra_folder": (["--dataset", "folder", "--train_dir", "{root}/good", "--test_dir",
                              "{root}/good", "--extra_train_dir", "{root}/nowhere"],
                             "nowhere: folder does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_with_one_clear_message(case, bad_data, tmp_path):
    args, message = BAD_INPUT[case]
    args = [a.format(root=bad_data) for a in args]
    result = run_cli("dcbh_tf.train", [*args, "--model_dir", str(tmp_path / "run")], tmp_path,
                     timeout=60)
    assert result.returncode == 2, result.stderr  # a user's mistake (README: exit codes)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()  # rejected before anything was written
    assert not (tmp_path / "data").exists()  # nor the synthetic set (written in the cwd)


@pytest.mark.slow
def test_train_end_to_end_on_tiny_synthetic_data(tmp_path):
    data_dir, model_dir = tmp_path / "data", tmp_path / "run"
    common = ["--dataset", "synthetic", "--data_dir", str(data_dir),
              "--synthetic_identities", "6", "--synthetic_train_per_identity", "4",
              "--synthetic_test_per_identity", "2", "--width_multiplier", "0.0625",
              "--batch_size", "8", "--model_dir", str(model_dir)]
    result = run_cli("dcbh_tf.train",
                     [*common, "--epochs", "1", "--num_bits", "12", "--code_length", "4"],
                     tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/1 | train loss" in result.stdout
    assert "best_map" in result.stdout and "metrics.json" in result.stdout
    metrics = json.load(open(model_dir / "metrics.json"))
    assert metrics["epochs_completed"] == 1
    assert metrics["method"]["num_bits"] == 12 and metrics["method"]["code_length"] == 4
    assert metrics["num_classes"] == 6 and metrics["dataset"] == "synthetic"
    run_config = json.load(open(model_dir / "run_config.json"))
    assert run_config["method"]["width_multiplier"] == 0.0625
    assert run_config["dataset"]["synthetic"]["num_identities"] == 6
    assert os.path.exists(data_dir / "meta.json")

    # Same folder, another model: refused with one message, nothing touched.
    again = run_cli("dcbh_tf.train",
                    [*common, "--epochs", "2", "--num_bits", "24", "--code_length", "4"],
                    tmp_path)
    assert again.returncode == 2
    assert "new --model_dir" in again.stderr and "num_bits" in again.stderr
    assert "Traceback" not in again.stderr
    assert json.load(open(model_dir / "metrics.json"))["epochs_completed"] == 1


@pytest.mark.slow
def test_non_finite_loss_exits_non_zero(tmp_path):
    result = run_cli("dcbh_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "2",
        "--synthetic_test_per_identity", "1", "--width_multiplier", "0.0625",
        "--num_bits", "8", "--code_length", "2", "--batch_size", "8",
        "--center_weight", "1e38", "--epochs", "1",
        "--model_dir", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 1
    assert "error: non-finite training loss at epoch 1, step 1/1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run" / "metrics.json")
