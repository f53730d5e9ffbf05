"""The reproduction harness end to end on tiny synthetic data: tables, resume, figures."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.metrics import retrieval_metrics
from common.reproduce import cells as cells_module
from common.reproduce import isolation
from common.reproduce.cells import CellSettingsError
from common.reproduce.layout import CELL_FILE, CODES_FILE, cell_dir
from common.reproduce.curves import ranking
from common.reproduce.figures import GRID_FIGURE, PK_FIGURE, PR_FIGURE
from common.reproduce.harness import RESULTS_CSV, RESULTS_MD, ReproduceConfig, reproduce
from common.training.data import load_split_data

pytestmark = pytest.mark.slow  # trains models or starts processes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_split_data("synthetic", str(tmp_path_factory.mktemp("rep") / "data"),
                           synthetic_kwargs=dict(num_identities=6, train_per_identity=8,
                                                 test_per_identity=3))


def _config(out, **kwargs):
    settings = dict(out=str(out), methods=["itq", "dcbh"], bits=[12, 8], epochs=2,
                    batch_size=16, eval_every=0, width_multiplier=0.0625)
    settings.update(kwargs)
    return ReproduceConfig(**settings)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "out"
    return out, reproduce(_config(out), data)


def test_every_cell_is_run_and_tabulated_in_method_order(finished):
    out, cells = finished
    assert sorted(cells) == [("dcbh", 8, 0), ("dcbh", 12, 0), ("itq", 8, 0), ("itq", 12, 0)]
    with open(out / RESULTS_CSV) as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["bits"], r["hamming"]) for r in rows] == [
        (m, b, h) for m in ("dcbh", "itq") for b in ("8", "12") for h in ("exact", "legacy")]
    assert all(r["ties"] == "index" for r in rows)


def test_table_figures_equal_the_evaluator_on_the_saved_codes(finished):
    out, _ = finished
    with open(out / RESULTS_CSV) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        codes = np.load(os.path.join(cell_dir(str(out), row["method"], int(row["bits"])),
                                     CODES_FILE))
        assert codes["query_codes"].shape[1] == int(row["bits"])
        expected = retrieval_metrics(codes["query_codes"], codes["query_labels"],
                                     codes["db_codes"], codes["db_labels"], top_k=50, radius=2,
                                     hamming=row["hamming"], ties="index")
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, abs=1e-12), (row["method"], key)


def test_markdown_has_both_distances_all_metrics_and_the_settings(finished):
    out, cells = finished
    text = (out / RESULTS_MD).read_text()
    assert "## Under the exact Hamming distance" in text
    assert "## Under the original evaluation's legacy distance" in text
    for title in ("### mAP", "### precision@50", "### precision within Hamming radius 2",
                  "### recall within Hamming radius 2"):
        assert text.count(title) == 2
    assert "| method | 8 bits | 12 bits |" in text
    exact_map = cells["itq", 8, 0]["figures"]["exact"]["map"]
    assert f"{exact_map:.4f}" in text
    assert "Ties between equal distances: **index**" in text
    assert "tensorflow:" in text and "epochs: 2" in text
    for png in (PR_FIGURE, PK_FIGURE, GRID_FIGURE):
        assert f"]({png})" in text


def test_pngs_are_written(finished):
    out, _ = finished
    for png in (PR_FIGURE, PK_FIGURE, GRID_FIGURE):
        with open(out / png, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(out / png) > 5000


def test_curves_are_consistent_with_the_table(finished):
    _, cells = finished
    for cell in cells.values():
        curve = cell["curves"]["radius"]
        assert curve["radius"] == list(range(cell["bits"] + 1))
        assert curve["precision"][2] == cell["figures"]["exact"]["precision_within_radius"]
        assert curve["recall"][2] == cell["figures"]["exact"]["recall_within_radius"]
        assert curve["recall"][-1] == pytest.approx(1.0)  # everything lies within radius = bits
        pk = cell["curves"]["precision_at_k"]
        top_k = min(50, max(pk["k"]))  # K = 50, capped at the database's size
        assert pk["precision"][pk["k"].index(top_k)] == cell["figures"]["exact"]["precision_at_k"]


def test_resume_reuses_finished_cells_and_runs_only_missing_ones(finished, data, monkeypatch):
    out, cells = finished
    os.remove(os.path.join(cell_dir(str(out), "itq", 12), CELL_FILE))  # "interrupted" cell

    def no_training(*args, **kwargs):
        raise AssertionError("a finished deep cell was trained again")

    monkeypatch.setattr(cells_module, "_deep_codes", no_training)
    monkeypatch.setattr(isolation, "run_cell_process", no_training)
    again = reproduce(_config(out), data)
    for key in cells:
        assert again[key]["figures"] == cells[key]["figures"]
    assert os.path.exists(os.path.join(cell_dir(str(out), "itq", 12), CELL_FILE))


def test_finished_only_tabulates_what_finished_and_runs_nothing(finished, data, monkeypatch):
    """--finished_only: the finished cells' figures, the others "-" and listed; no cell runs,
    and a settings check still applies (a finished cell of other settings is refused)."""
    out, cells = finished
    os.remove(os.path.join(cell_dir(str(out), "dcbh", 8), CELL_FILE))  # "still running"

    def no_run(*args, **kwargs):
        raise AssertionError("--finished_only ran a cell")

    monkeypatch.setattr(cells_module, "run_cell", no_run)
    monkeypatch.setattr(isolation, "run_cell_process", no_run)
    monkeypatch.setattr(cells_module, "_deep_codes", no_run)
    got = reproduce(_config(out, finished_only=True, seeds=[0, 1]), data)
    assert sorted(got) == sorted(k for k in cells if k != ("dcbh", 8, 0))
    for key in got:
        assert got[key]["figures"] == cells[key]["figures"]
    with open(os.path.join(str(out), RESULTS_MD), encoding="utf-8") as f:
        text = f.read()
    assert ("**Not finished: 5 of 8 cells** (shown as - or left out of a mean, which is then "
            "over the seeds that finished): DCBH 8 bits seed 0, DCBH 8 bits seed 1, ITQ 8 bits "
            "seed 1, DCBH 12 bits seed 1, ITQ 12 bits seed 1.") in text
    dcbh_12 = f"{cells['dcbh', 12, 0]['figures']['exact']['map']:.4f}"
    assert f"| DCBH | - | {dcbh_12} |" in text  # no seed 1 anywhere: seed 0's figure alone
    with pytest.raises(CellSettingsError, match="epochs"):
        reproduce(_config(out, finished_only=True, epochs=3), data)
    # the folder is left as a later full run needs it: the missing cell runs then
    monkeypatch.undo()
    again = reproduce(_config(out), data)
    assert sorted(again) == sorted(cells)


def test_other_settings_on_a_finished_folder_are_refused(finished, data):
    out, _ = finished
    with pytest.raises(CellSettingsError, match="epochs"):
        reproduce(_config(out, epochs=3), data)


def test_ranking_orders_by_distance_then_index():
    db = np.array([[1, 1, 1], [-1, -1, -1], [1, 1, -1], [1, 1, 1]])
    np.testing.assert_array_equal(ranking(np.array([[1, 1, 1]]), db, 4), [[0, 3, 2, 1]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods=["dcbh", "sdh"]), "unknown method"),
    (dict(bits=[0, 12]), "bits must be positive"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(ties="random"), "ties must be"),
])
def test_bad_settings_are_refused(data, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reproduce(_config(tmp_path / "x", **kwargs), data)


def test_command_line_reports_bad_flags_in_one_line(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    for args, message in ((["--methods", "dcbh"], "--out is required"),
                          (["--out", str(tmp_path), "--methods", "foo"], "unknown method")):
        result = subprocess.run([sys.executable, "-m", "common.reproduce", *args], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("dataset, folders, methods", [
    ("facescrub", ("train_folder_facescrub", "test_folder_facescrub"), "lsh,dcbh"),
    ("youtube_faces", ("train_vec_folder_32_32", "test_vec_folder_32_32"), "itq"),
])
def test_original_folder_names_work_unchanged(tmp_path, dataset, folders, methods):
    """The original data sets' folder layout, filled with synthetic faces."""
    from common.synthetic import write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path / "gen"), num_identities=5, train_per_identity=6,
                     test_per_identity=2, seed=1)
    os.rename(tmp_path / "gen" / "train", tmp_path / folders[0])
    os.rename(tmp_path / "gen" / "test", tmp_path / folders[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "common.reproduce", "--dataset", dataset, "--data_dir",
         str(tmp_path), "--methods", methods, "--bits", "8", "--epochs", "1", "--batch_size", "16",
         "--width_multiplier", "0.0625", "--eval_every", "0", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / RESULTS_CSV) as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["method"] for r in rows}) == sorted(methods.split(","))
    text = (tmp_path / "out" / RESULTS_MD).read_text()
    assert f"Data: **{dataset}** (25 database / train images, validation rows held out of " \
           f"them, 10 queries / test images, {530 if dataset == 'facescrub' else 1595} " \
           "identities)" in text


def test_a_table_with_extra_training_rows_passes_them_to_every_cell(tmp_path):
    """--extra_train_dir reaches each cell's own process, its settings and the page."""
    import json

    from common.data import write_pickle_folder
    from common.synthetic import write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path / "data"), num_identities=5, train_per_identity=6,
                            test_per_identity=2, seed=1)
    pixels = np.random.default_rng(0).integers(0, 256, (7, 3072)).astype(np.float32)
    write_pickle_folder(tmp_path / "variants", pixels, np.array([0, 1, 2, 3, 4, 0, 1]))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "common.reproduce", "--dataset", "folder", "--train_dir",
         str(tmp_path / "data" / "train"), "--test_dir", str(tmp_path / "data" / "test"),
         "--extra_train_dir", str(tmp_path / "variants"), "--methods", "ddh", "--bits", "8",
         "--epochs", "1", "--batch_size", "16", "--eval_every", "0", "--out",
         str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(cell_dir(str(tmp_path / "out"), "ddh", 8), CELL_FILE)) as f:
        cell = json.load(f)
    assert f"--extra_train_dir={tmp_path / 'variants'}" in cell["command"]["argv"]
    assert cell["settings"]["extra_train_images"] == 7
    assert cell["settings"]["train_images"] == 25  # the database: the train folder less validation
    text = (tmp_path / "out" / RESULTS_MD).read_text()
    assert ("(25 database / train images, validation rows held out of them, and 7 extra "
            "training rows of the deep rows that are neither database nor validation items, "
            "10 queries") in text
