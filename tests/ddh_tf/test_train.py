"""DDH through the shared machinery: its command line, end to end (tiny synthetic data).

Learning and the served export are checked for every registered method by
tests/methods/test_learning.py and tests/methods/test_served_export.py.
"""

from __future__ import annotations

import json

import pytest

from method_cli import run_cli

from common.cli.tf_startup import STARTUP_NOTICES
from common.training.saved_run import evaluate_run
from common.training.reporting import METRICS
from ddh_tf.method import DDH

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


def test_train_command_line(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli("ddh_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--num_bits", "12", "--split_num", "3",
        "--quantization_weight", "0.05", "--weight_decay", "none",
        "--weight_decay_scale", "3e-4", "--batch_size", "8", "--epochs", "2",
        "--eval_every", "0", "--model_dir", str(model_dir)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout
    # TensorFlow's start-up notices and its own INFO lines stay off stderr (common.cli.tf_startup)
    assert not [line for line in result.stderr.splitlines()
                if any(n.match(line) for n in STARTUP_NOTICES)], result.stderr
    assert "Sharding callback" not in result.stderr and "Traceback" not in result.stderr
    metrics = json.load(open(model_dir / METRICS))
    assert metrics["method"] == {"method": "ddh", "num_bits": 12, "split_num": 3,
                                 "quantization_weight": 0.05, "weight_decay": "none",
                                 "weight_decay_scale": 3e-4}
    assert metrics["epochs_completed"] == 2 and metrics["num_classes"] == 4

    # The run folder is complete: it re-evaluates (python -m ddh_tf.evaluate's work,
    # in-process: one TensorFlow start less).
    figures = evaluate_run(DDH, str(model_dir), "last")
    assert figures["epoch"] == 2 and figures["queries"] == 8 and figures["database"] == 16
    assert figures["map"] == metrics["last"]["map"]  # the state's recorded figure, again
