"""What users made with an older version still works: a run folder, an export and a gallery
index made by the code of commit c874d72 (tests/data/old_format/README.md) are evaluated,
exported, resumed and searched by today's code, through the same command lines."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from checkout import ROOT
from method_cli import run_cli

OLD = os.path.join(ROOT, "tests", "data", "old_format")
SYNTHETIC = dict(num_identities=4, train_per_identity=4, test_per_identity=2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """A copy of the old folders (tests must not touch the originals) and the synthetic
    data they were made from, regenerated (same settings, seed 0)."""
    from common.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("old")
    for name in ("run", "export", "index"):
        shutil.copytree(os.path.join(OLD, name), root / name)
    write_synthetic_dataset(str(root / "data"), **SYNTHETIC)
    return root


def _recorded(run) -> dict:
    with open(run / "metrics.json") as f:
        return json.load(f)


def _faces(folder) -> np.ndarray:
    from common.data import load_pickle_folder, to_nhwc

    rows, _ = load_pickle_folder(str(folder))
    return np.clip(to_nhwc(rows), 0, 255).astype(np.uint8)


MARGIN = 1e-3  # far above the float differences of two CPUs' kernels on this tiny network


def test_the_old_codes_tell_faces_apart_away_from_0(old):
    """What makes the comparisons below able to fail on any CPU: the old model codes the
    faces differently (not every face alike), and no relaxed output lies within MARGIN of
    0, where a code bit flips."""
    from common.export.loader import load_encoder

    encoder = load_encoder(str(old / "export"))
    for split in ("train", "test"):
        out = encoder(_faces(old / "data" / split))
        assert np.abs(out["relaxed"]).min() > MARGIN, split
        assert len(np.unique(out["codes"], axis=0)) > 4, split
    assert len(np.unique(np.load(old / "index" / "codes.npy"), axis=0)) == 11
    # the old index predates the recorded probe outputs: it knows its model by the hash of
    # the probe images' codes, which holds on any CPU only while no probe output is near 0
    from face_search.encoder import _probe_images

    assert np.abs(encoder(_probe_images())["relaxed"]).min() > 1e-4  # ~100x kernels' error


def test_an_old_run_evaluates_to_its_recorded_figures(old):
    result = run_cli("dcbh_tf.evaluate", [
        "--model_dir", str(old / "run"), "--checkpoint", "best_map", "--train_dir",
        str(old / "data" / "train"), "--test_dir", str(old / "data" / "test"),
        "--output", str(old / "figures.json")], old)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(old / "figures.json") as f:
        figures = json.load(f)
    recorded = _recorded(old / "run")["best_map"]
    for key in ("map", "precision_at_k", "precision_within_radius", "recall_within_radius"):
        assert figures[key] == pytest.approx(recorded[key], abs=1e-9), key


def test_an_old_run_exports_to_what_the_old_export_serves(old, tmp_path):
    from common.export.loader import load_encoder

    result = run_cli("dcbh_tf.export", ["--model_dir", str(old / "run"), "--export_dir",
                                        str(tmp_path / "new")], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    pixels = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    new, before = load_encoder(str(tmp_path / "new"))(pixels), load_encoder(str(old / "export"))(
        pixels)
    np.testing.assert_allclose(new["relaxed"], before["relaxed"], rtol=1e-5, atol=1e-6)
    far = np.abs(before["relaxed"]) > 1e-3  # codes flip at 0: compare away from it
    np.testing.assert_array_equal(new["codes"][far], before["codes"][far])


def test_an_old_run_resumes(old, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(old / "run", run)
    result = run_cli("dcbh_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(old / "data"), "--synthetic_identities",
        "4", "--synthetic_train_per_identity", "4", "--synthetic_test_per_identity", "2",
        "--num_bits", "8", "--code_length", "3",
        "--width_multiplier", "0.03125", "--epochs", "41", "--batch_size", "8",
        "--eval_every", "0", "--log_every_steps", "0", "--model_dir", str(run)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stdout and "epoch 41/41" in result.stdout
    assert _recorded(run)["epochs_completed"] == 41


def test_an_old_index_is_searched_with_the_old_export(old):
    from face_search.api import index_summary, search

    summary = index_summary(str(old / "index"))
    assert summary["count"] == 16 and summary["num_bits"] == 8
    from common.export.loader import load_encoder

    faces = _faces(old / "data" / "train")
    results = search(faces, str(old / "index"), model=str(old / "export"), top_k=16)
    # the reference: Hamming distances of the old export's codes to the old index's, bit by
    # bit, ranked by distance then gallery id (the codes are CPU-independent, test above)
    gallery = np.unpackbits(np.load(old / "index" / "codes.npy"), axis=1)[:, :8]
    queries = np.unpackbits(load_encoder(str(old / "export"))(faces)["packed"], axis=1)[:, :8]
    distances = (queries[:, None, :] != gallery[None, :, :]).sum(axis=2)
    for row, result in zip(distances, results, strict=True):
        order = np.lexsort((np.arange(16), row))
        assert [h.gallery_id for h in result.hits] == order.tolist()
        assert [h.distance for h in result.hits] == row[order].tolist()
    assert all(r.hits[0].distance == 0 for r in results)  # each face finds itself
