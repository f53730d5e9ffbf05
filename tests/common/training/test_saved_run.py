"""A saved run's evaluation and export report what training reported for the same state
(common/training/saved_run.py): a subset of a named data set, a validation split, mixed
precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import pytest

from checkout import ROOT
from tiny_training import synthetic_split

from common.data import load_pickle_folder, write_pickle_folder
from common.export.folder import EXPORT_INFO
from common.training.data import KNOWN_DATASETS, load_split_data
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS
from common.training.saved_run import evaluate_run, export_run, load_run
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
FIGURES = ("map", "precision_at_k", "precision_within_radius", "recall_within_radius")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """6 identities x (8 train + 3 test) synthetic images, generated once."""
    root = tmp_path_factory.mktemp("saved_run")
    synthetic_split(root / "data", 6, 8, 3)
    return root


def _train(data, model_dir, epochs: int = 2, width: float = 0.0625, **settings) -> dict:
    config = TrainConfig(epochs=epochs, model_dir=str(model_dir), batch_size=16, eval_every=0,
                         log_every_steps=0, **settings)
    train(DCBH(num_bits=12, code_length=3, width_multiplier=width), data, config)
    with open(os.path.join(model_dir, METRICS)) as f:
        return json.load(f)


def _assert_reproduces(model_dir, reported: dict) -> None:
    for slot in ("best_map", "last"):
        result = evaluate_run(DCBH, str(model_dir), slot)
        assert result["epoch"] == reported[slot]["epoch"], slot
        for key in FIGURES:
            assert result[key] == reported[slot][key], (slot, key)


def test_a_subset_of_a_named_data_set_evaluates_as_it_trained(root):
    """FaceScrub's identities 500..509 (here 500..505): training takes FaceScrub's 530
    classes; evaluation used to read the folders as "folder", recount the classes from the
    labels and refuse them as too sparse."""
    for split in ("train", "test"):
        rows, labels = load_pickle_folder(str(root / "data" / split))
        write_pickle_folder(root / "fs" / split, rows, labels + 500)
    data = load_split_data("facescrub", train_dir=str(root / "fs" / "train"),
                           test_dir=str(root / "fs" / "test"))
    assert data.num_classes == KNOWN_DATASETS["facescrub"][2]
    model_dir = root / "fs_run"
    reported = _train(data, model_dir)
    _assert_reproduces(model_dir, reported)


@pytest.fixture(scope="module")
def validation_run(root):
    data = load_split_data("synthetic", str(root / "data"), validation_fraction=0.25)
    model_dir = root / "validation_run"
    return model_dir, _train(data, model_dir)


def test_an_export_names_the_split_of_each_recorded_figure(validation_run, tmp_path):
    """With a validation split the state's recorded figures are its validation split's
    (which chose it); the export used to print and record only those, as "mAP". Now it
    records both, labelled, as the run recorded them (nothing evaluated at export)."""
    model_dir, reported = validation_run
    info = export_run(DCBH, str(model_dir), str(tmp_path / "export"))["checkpoint"]
    assert info["metrics"]["queries"] == "validation"
    assert info["test_metrics"]["queries"] == "test"
    for key in FIGURES:
        assert info["metrics"][key] == reported["best_map"]["validation"][key], key
        assert info["test_metrics"][key] == reported["best_map"][key], key

    result = subprocess.run(
        [sys.executable, "-m", "common.cli.export", "--model_dir", str(model_dir),
         "--export_dir", str(tmp_path / "cli_export")],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = (f"validation mAP {reported['best_map']['validation']['map']:.4f}, "
               f"test mAP {reported['best_map']['map']:.4f}")
    assert f"exported best_map (epoch {reported['best_map']['epoch']}, {figures}), " \
        in result.stdout
    with open(tmp_path / "cli_export" / EXPORT_INFO) as f:
        assert json.load(f)["checkpoint"]["test_metrics"]["map"] == reported["best_map"]["map"]


def test_evaluation_of_a_validation_run_reproduces_its_test_figures(validation_run):
    model_dir, reported = validation_run
    _assert_reproduces(model_dir, reported)


def test_a_mixed_precision_run_evaluates_under_its_own_policy(tmp_path, op_determinism):
    """Training evaluates under its policy (mixed_bfloat16 on a CPU); evaluate used to
    rebuild the model in float32, whose codes differ in bits near 0 (here 2 of 768 on this
    project's CPU, mAP 0.2077 instead of 0.2089). The export still serves float32."""
    data = synthetic_split(tmp_path / "data", 8, 8, 3)
    model_dir = tmp_path / "run"
    reported = _train(data, model_dir, epochs=3, width=0.125, mixed_precision=True,
                      learning_rate=0.005, deterministic=True)
    with open(model_dir / "run_config.json") as f:
        policy = json.load(f)["precision_policy"]
    assert policy.startswith("mixed_")
    _assert_reproduces(model_dir, reported)
    assert evaluate_run(DCBH, str(model_dir), "last")["precision_policy"] == policy
    assert keras.mixed_precision.global_policy().name == "float32"  # set back
    assert load_run(DCBH, str(model_dir), "last").model.dtype_policy.name == "float32"
    assert load_run(DCBH, str(model_dir), "last",
                    as_trained=True).model.dtype_policy.name == policy
