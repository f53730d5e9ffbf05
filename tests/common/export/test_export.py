"""Export of a trained run: SavedModel in a fresh process, .keras round trip, packing, CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from checkout import ROOT
from fresh_process import assert_served_codes, serve_in_fresh_process

from common.export.folder import EXPORT_INFO, FORMAT, FORMAT_KEY, KERAS_FILE
from common.export.serving import pack_codes, pack_codes_numpy
from common.training.saved_run import RunFolderError, evaluate_run, export_run, load_run
from common.training.data import load_split_data
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS
from dcbh_tf.method import DCBH
from ddch_tf.method import DDCH

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)



@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch DCBH run (12 bits, narrow backbone) on 6 synthetic identities."""
    root = tmp_path_factory.mktemp("export")
    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=dict(
        num_identities=6, train_per_identity=8, test_per_identity=3))
    model_dir = root / "run"
    config = TrainConfig(epochs=3, model_dir=str(model_dir), batch_size=16, eval_every=0,
                         log_every_steps=0)
    train(DCBH(num_bits=12, code_length=3, width_multiplier=0.0625), data, config)
    raw = np.random.default_rng(7).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    return model_dir, data, raw


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model_dir, _, _ = trained
    export_dir = tmp_path_factory.mktemp("out") / "dcbh_export"
    info = export_run(DCBH, str(model_dir), str(export_dir), "best_map")
    return export_dir, info


def _keras_relaxed(run, raw: np.ndarray) -> np.ndarray:
    x = run.normalization.apply(raw.astype(np.float32))
    return np.asarray(run.model(x, training=False)[run.codes_output], np.float32)


def test_saved_model_in_a_fresh_process_gives_the_keras_codes(trained, exported, tmp_path):
    model_dir, _, raw = trained
    export_dir, _ = exported
    served = serve_in_fresh_process(export_dir, raw, tmp_path)

    run = load_run(DCBH, str(model_dir), "best_map")
    relaxed = _keras_relaxed(run, raw)
    assert served["codes"].shape == (9, 12)
    assert served["packed"].dtype == np.uint8 and served["packed"].shape == (9, 2)
    assert_served_codes(served, relaxed, atol=1e-6)


def test_export_info_records_the_checkpoint_and_normalisation(trained, exported):
    model_dir, data, _ = trained
    export_dir, info = exported
    with open(os.path.join(export_dir, EXPORT_INFO)) as f:
        assert json.load(f) == info
    with open(os.path.join(model_dir, METRICS)) as f:
        metrics = json.load(f)
    assert info["num_bits"] == 12 and info["num_classes"] == 6
    assert info[FORMAT_KEY] == FORMAT  # the marker that lets a later export replace it
    assert info["checkpoint"]["slot"] == "best_map"
    assert info["checkpoint"]["epoch"] == metrics["best_map"]["epoch"]
    assert info["checkpoint"]["metrics"]["map"] == metrics["best_map"]["map"]
    # no validation split: the figures that chose the state are the test split's
    assert info["checkpoint"]["metrics"]["queries"] == "test"
    assert info["checkpoint"]["test_metrics"] == info["checkpoint"]["metrics"]
    assert info["normalization"]["mean"] == data.normalization.mean
    assert info["normalization"]["std"] == data.normalization.std
    assert info["method"]["method"] == "dcbh" and info["method"]["code_length"] == 3


def test_keras_file_round_trips_with_the_custom_layers(trained, exported):
    model_dir, data, _ = trained
    export_dir, _ = exported
    run = load_run(DCBH, str(model_dir), "best_map")
    loaded = keras.models.load_model(os.path.join(export_dir, KERAS_FILE))
    assert {type(layer).__name__ for layer in loaded.layers} >= {"BlockHash", "CenterLoss"}
    x = data.test_images[:7]
    for got, want in zip(loaded(x, training=False), run.model(x, training=False)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    centers = [w for w in loaded.weights if "centers" in w.path]
    assert len(centers) == 1
    np.testing.assert_array_equal(np.asarray(centers[0]),
                                  np.asarray(run.model.get_layer("center_loss").centers))


def test_each_slot_exports_its_own_weights(trained, tmp_path):
    model_dir, _, raw = trained
    export_run(DCBH, str(model_dir), str(tmp_path / "last"), "last")
    serve = tf.saved_model.load(str(tmp_path / "last")).signatures["serving_default"]
    got = serve(images=tf.constant(raw))["relaxed"].numpy()
    np.testing.assert_allclose(got, _keras_relaxed(load_run(DCBH, str(model_dir), "last"), raw),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 13, 48, 65])
def test_pack_codes_matches_numpy_little_endian_packbits(bits):
    rng = np.random.default_rng(bits)
    codes = np.where(rng.random((5, bits)) < 0.5, -1, 1).astype(np.int8)
    got = pack_codes(tf.constant(codes)).numpy()
    np.testing.assert_array_equal(got, np.packbits(codes > 0, axis=1, bitorder="little"))
    np.testing.assert_array_equal(pack_codes_numpy(codes), got)


def test_failed_export_leaves_the_previous_export_untouched(trained, exported, tmp_path,
                                                            monkeypatch):
    model_dir, _, _ = trained
    target = tmp_path / "export"
    export_run(DCBH, str(model_dir), str(target), "last")
    before = sorted(os.listdir(target))

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_run(DCBH, str(model_dir), str(target), "best_loss")
    assert sorted(os.listdir(target)) == before
    with open(target / EXPORT_INFO) as f:
        assert json.load(f)["checkpoint"]["slot"] == "last"
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no temporary folder left behind


def test_evaluate_run_reproduces_the_figures_of_metrics_json(trained):
    model_dir, _, _ = trained
    with open(os.path.join(model_dir, METRICS)) as f:
        recorded = json.load(f)
    for slot in ("best_map", "last"):
        result = evaluate_run(DCBH, str(model_dir), slot)
        for key in ("map", "precision_at_k", "precision_within_radius", "recall_within_radius"):
            assert result[key] == recorded[slot][key], (slot, key)
    legacy = evaluate_run(DCBH, str(model_dir), "last", hamming="legacy")
    assert legacy["hamming"] == "legacy" and 0.0 <= legacy["map"] <= 1.0


def test_evaluate_run_against_another_database(trained, tmp_path):
    """--database_dir: the train split's rows in another order and half of them, scored
    against codes computed here from the raw rows with the run's own constants."""
    from common.data import load_pickle_folder, write_pickle_folder
    from common.metrics import retrieval_metrics
    from common.training.data import load_split_data as load

    model_dir, _, _ = trained
    recorded = load_run(DCBH, str(model_dir), "last").run_config["dataset"]
    rows, labels = load_pickle_folder(recorded["train_dir"])
    order = np.random.default_rng(3).permutation(len(labels))[: len(labels) // 2]
    write_pickle_folder(tmp_path / "gallery", rows[order], labels[order], rows_per_file=7)

    result = evaluate_run(DCBH, str(model_dir), "last", database_dir=str(tmp_path / "gallery"))
    run = load_run(DCBH, str(model_dir), "last")
    gallery = run.normalization.apply(rows[order]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    test = load("folder", train_dir=recorded["train_dir"], test_dir=recorded["test_dir"])

    def codes(images):
        return np.asarray(run.model(images, training=False)[run.codes_output])

    expected = retrieval_metrics(codes(test.test_images), test.test_labels, codes(gallery),
                                 labels[order], top_k=50, radius=2)
    for key in ("map", "precision_at_k", "precision_within_radius", "recall_within_radius"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    assert result["database"] == len(order)
    assert result["database_dir"] == str(tmp_path / "gallery")

    whole = evaluate_run(DCBH, str(model_dir), "last", database_dir=recorded["train_dir"])
    default = evaluate_run(DCBH, str(model_dir), "last")
    assert whole["map"] == default["map"]  # the train split itself: the same figures
    with pytest.raises(ValueError, match="not both"):
        evaluate_run(DCBH, str(model_dir), "last", train_dir=recorded["train_dir"],
                     database_dir=str(tmp_path / "gallery"))


def test_run_folder_errors_name_the_problem(trained, tmp_path):
    model_dir, _, _ = trained
    with pytest.raises(RunFolderError, match="folder does not exist"):
        load_run(DCBH, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="run_config.json: not found"):
        load_run(DCBH, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="checkpoint slot must be one of"):
        load_run(DCBH, str(model_dir), "newest")

    for other in (DDCH, "ddch"):  # a method class, or its registry name
        with pytest.raises(RunFolderError, match="holds a 'dcbh' run, not 'ddch'"):
            load_run(other, str(model_dir))


def _cli(module, args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_export_and_evaluate_command_lines(trained, tmp_path):
    model_dir, _, _ = trained
    out = tmp_path / "cli_export"
    result = _cli("dcbh_tf.export", ["--model_dir", str(model_dir), "--export_dir", str(out),
                                     "--checkpoint", "best_loss"])
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in result.stdout
    with open(os.path.join(model_dir, METRICS)) as f:
        best_loss = json.load(f)["best_loss"]
    # no validation split: the test split's mAP, unlabelled as in training's own lines
    assert f"exported best_loss (epoch {best_loss['epoch']}, mAP {best_loss['map']:.4f}), " \
        in result.stdout
    with open(out / EXPORT_INFO) as f:
        assert json.load(f)["checkpoint"]["slot"] == "best_loss"

    result = _cli("dcbh_tf.evaluate", ["--model_dir", str(model_dir), "--checkpoint", "last",
                                       "--output", str(tmp_path / "eval.json")])
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "eval.json") as f:
        figures = json.load(f)
    with open(os.path.join(model_dir, METRICS)) as f:
        assert figures["map"] == json.load(f)["last"]["map"]
    assert f"mAP {figures['map']:.4f}" in result.stdout


@pytest.mark.parametrize("args, message", [
    ([], "--model_dir is required"),
    (["--model_dir", "{tmp}/nowhere", "--export_dir", "{tmp}/x"], "nowhere: folder does not exist"),
    (["--model_dir", "{run}"], "--export_dir is required"),
    (["--model_dir", "{run}", "--export_dir", "{tmp}/x", "--checkpoint", "newest"],
     "best_map|best_loss|last"),
    (["--model_dir", "{run}", "--export_dir", "{tmp}/x", "extra"], "unexpected arguments: extra"),
])
def test_export_command_line_errors(trained, tmp_path, args, message):
    model_dir, _, _ = trained
    args = [a.format(tmp=tmp_path, run=model_dir) for a in args]
    result = _cli("dcbh_tf.export", args)
    assert result.returncode == 2, result.stderr  # a user's mistake (README: exit codes)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
