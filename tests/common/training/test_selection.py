"""Choosing a run's state on the validation split: the test split never influences it.

The proof: the same run twice, once with the real test split and once with a test split of
noise with shuffled labels. Everything that decides selection (the validation figures of
every evaluated state, which states the slots name, their weights) must come out
identical; only the reported test figures may differ.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from common.metrics import METRIC_KEYS
from common.training.evaluate import evaluate_retrieval
from common.training.loop import TrainConfig, train
from common.training.saved_run import evaluate_run, load_run
from common.training.data import load_split_data
from ddh_tf.method import DDH
from tiny_training import checkpoint_tensors, synthetic_split

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("op_determinism")]
def _train(data, folder, epochs=4):
    config = TrainConfig(epochs=epochs, model_dir=str(folder), batch_size=16, shuffle=True,
                         eval_every=1, deterministic=True, log_every_steps=0)
    return train(DDH(num_bits=12), data, config)


def _slots(folder) -> dict:
    with open(os.path.join(folder, "checkpoints", "index.json")) as f:
        return json.load(f)["slots"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    data = load_split_data("synthetic", str(root / "data"), validation_fraction=0.25,
                           synthetic_kwargs=dict(num_identities=6, train_per_identity=12,
                                                 test_per_identity=3))
    rng = np.random.default_rng(0)
    noise = dataclasses.replace(
        data, test_images=rng.uniform(-1, 1, data.test_images.shape).astype(np.float32),
        test_labels=rng.permutation(data.test_labels))
    real = _train(data, root / "real")
    fake = _train(noise, root / "noise")
    from tensorflow.python.framework import config as tf_config
    tf_config.disable_op_determinism()
    return data, (root / "real", real), (root / "noise", fake)


def test_the_test_split_never_changes_which_state_is_chosen(runs):
    _, (real_dir, real), (noise_dir, noise) = runs
    real_slots, noise_slots = _slots(real_dir), _slots(noise_dir)
    for slot in ("last", "best_loss", "best_map"):
        assert real_slots[slot]["epoch"] == noise_slots[slot]["epoch"]
        assert real_slots[slot]["metrics"] == {**noise_slots[slot]["metrics"],
                                               "seconds": real_slots[slot]["metrics"]["seconds"]}
        assert real[slot]["validation"] == noise[slot]["validation"]
        ours, theirs = checkpoint_tensors(real_dir, slot), checkpoint_tensors(noise_dir, slot)
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    # ... while what it reports on the test split does change with the test split
    assert real["best_map"]["map"] != noise["best_map"]["map"]
    assert real_slots["best_map"]["metrics"]["queries"] == "validation"


def test_the_report_gives_the_chosen_states_test_figures(runs):
    data, (real_dir, real), _ = runs
    assert real["protocol"]["selection"] == "validation split"
    assert real["protocol"]["validation"] == data.description["validation"]
    run = load_run(DDH, str(real_dir), "best_map")
    test = evaluate_retrieval(run.model, run.method, data)
    validation = evaluate_retrieval(run.model, run.method, data, queries="validation")
    for key in METRIC_KEYS:
        assert real["best_map"][key] == test[key]
        assert real["best_map"]["validation"][key] == validation[key]
    # evaluate rebuilds the same split from run_config.json: the same database, same figures
    again = evaluate_run(DDH, str(real_dir), "best_map")
    assert again["database"] == len(data.train_labels)
    assert again["validation_held_out"] == len(data.validation_labels)
    for key in METRIC_KEYS:
        assert again[key] == test[key]


def test_without_a_validation_split_the_report_says_it_chose_on_the_test_split(tmp_path,
                                                                               op_determinism):
    data = synthetic_split(tmp_path / "data", 4, 6, 2)
    report = _train(data, tmp_path / "run", epochs=2)
    assert report["protocol"]["selection"] == "test split (no validation split)"
    assert "validation" not in report["best_map"]
    assert _slots(tmp_path / "run")["best_map"]["metrics"]["queries"] == "test"
