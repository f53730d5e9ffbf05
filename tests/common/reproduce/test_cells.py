"""What a cell is compared on, and when: an interrupted cell resumes only with the settings it
started with, a finished cell is reused only with its method's config, a row has one spelling
and a width within bounds, and ``--finished_only`` works while a table runs.

Most tests build cell folders by hand (no training); those that train or start processes are
marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from checkout import ROOT
from common.io.atomic import write_json_atomic
from common.io.locks import run_lock
from common.reproduce import cells as cells_module
from common.reproduce import harness
from common.reproduce import isolation
from common.reproduce import methods as registry
from common.reproduce.cells import (CellSettingsError, cell_record, check_started_cell,
                                    finished_cell, start_cell)
from common.reproduce.harness import (RESULTS_CSV, RESULTS_MD, ReproduceConfig, cell_settings,
                                      reproduce, table_data)
from common.reproduce.layout import CELL_FILE, RUN_FOLDER, STARTED_FILE, cell_dir
from common.training.data import load_split_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_split_data("synthetic", str(tmp_path_factory.mktemp("cells") / "data"),
                           synthetic_kwargs=dict(num_identities=6, train_per_identity=8,
                                                 test_per_identity=3))


def _config(out, **kwargs):
    settings = dict(out=str(out), methods=["itq", "dcbh"], bits=[8], epochs=2, batch_size=16,
                    eval_every=0, width_multiplier=0.0625)
    settings.update(kwargs)
    config = ReproduceConfig(**settings)
    config.validate()
    return config


def _settings(data, out, row="dcbh", **kwargs):
    config = _config(out, **kwargs)
    return cell_settings(config, table_data(data, config), row)


def _no_run(*args, **kwargs):
    raise AssertionError("a cell ran")


def _interrupted(out, row, bits, settings):
    """A deep cell as a kill during its training leaves it: started.json, a run folder."""
    start_cell(str(out), row, bits, settings)
    os.makedirs(os.path.join(cell_dir(str(out), row, bits), RUN_FOLDER))


def _finished(out, row, bits, settings, **changes):
    """A finished cell's cell.json as the harness writes it (figures left out)."""
    record = cell_record(row, bits, settings)
    record.update(changes)
    write_json_atomic(os.path.join(cell_dir(str(out), row, bits), CELL_FILE), record)


# ------------------------------------------------------------- an interrupted cell (fix 1)
@pytest.mark.parametrize("change, shown", [
    (dict(batch_size=32), "batch_size: 16 -> 32"),
    (dict(epochs=1), "epochs: 2 -> 1"),
    (dict(eval_every=1), "eval_every: 0 -> 1"),
    (dict(deterministic=True), "deterministic: False -> True"),
])
def test_an_interrupted_cell_is_refused_with_other_settings(data, tmp_path, change, shown):
    out = tmp_path / "out"
    _interrupted(out, "dcbh", 8, _settings(data, out))
    folder = cell_dir(str(out), "dcbh", 8)
    with pytest.raises(CellSettingsError) as refused:
        check_started_cell(str(out), "dcbh", 8, _settings(data, out, **change))
    assert str(refused.value) == (
        f"{folder} was started with other settings ({shown}) and its interrupted training "
        "resumes only with them; use a new --out, or the original settings to resume it")
    check_started_cell(str(out), "dcbh", 8, _settings(data, out))  # the same: it resumes


def test_a_lone_cell_is_refused_before_it_trains(data, tmp_path, monkeypatch):
    """run_cell (what python -m common.reproduce.run_cell runs) checks before training."""
    out = tmp_path / "out"
    _interrupted(out, "dcbh", 8, _settings(data, out))
    monkeypatch.setattr(cells_module, "_deep_codes", _no_run)
    config = _config(out, batch_size=32)
    with pytest.raises(CellSettingsError, match=r"cells/dcbh_8 was started with other "
                                                r"settings \(batch_size: 16 -> 32\)"):
        cells_module.run_cell(str(out), "dcbh", 8, table_data(data, config),
                              cell_settings(config, table_data(data, config), "dcbh"))
    started = json.load(open(os.path.join(cell_dir(str(out), "dcbh", 8), STARTED_FILE)))
    assert started["settings"]["batch_size"] == 16  # the record is kept as it started


def test_the_harness_refuses_an_interrupted_cell_before_running_any(data, tmp_path,
                                                                    monkeypatch):
    out = tmp_path / "out"
    _interrupted(out, "dcbh", 8, _settings(data, out))
    for name in ("_deep_codes", "_baseline_codes"):
        monkeypatch.setattr(cells_module, name, _no_run)
    monkeypatch.setattr(isolation, "run_cell_process", _no_run)
    with pytest.raises(CellSettingsError, match=r"dcbh_8 was started with other settings "
                                                r"\(epochs: 2 -> 3\)"):
        reproduce(_config(out, epochs=3), data)
    assert not os.path.exists(os.path.join(cell_dir(str(out), "itq", 8), CELL_FILE))


def test_started_json_is_written_before_training_and_matches_what_is_compared(data, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "out"
    settings = _settings(data, out)
    seen = []
    monkeypatch.setattr(cells_module, "_deep_codes", lambda *a: seen.append(json.load(open(
        os.path.join(cell_dir(str(out), "dcbh", 8), STARTED_FILE)))) or _no_run())
    with pytest.raises(AssertionError, match="a cell ran"):
        cells_module.run_cell(str(out), "dcbh", 8, data, settings)
    assert seen == [json.loads(json.dumps(cell_record("dcbh", 8, settings)))]
    assert seen[0]["method_config"] == registry.make_deep_method("dcbh", 8, 0.0625).config()


def test_a_cell_that_trained_nothing_starts_with_any_settings(data, tmp_path):
    """started.json without run/: killed before its training began; nothing to resume."""
    out = tmp_path / "out"
    start_cell(str(out), "dcbh", 8, _settings(data, out))
    start_cell(str(out), "dcbh", 8, _settings(data, out, batch_size=32))
    started = json.load(open(os.path.join(cell_dir(str(out), "dcbh", 8), STARTED_FILE)))
    assert started["settings"]["batch_size"] == 32


def test_a_cell_folder_from_before_started_json_resumes_and_records_its_settings(data,
                                                                                 tmp_path):
    out = tmp_path / "out"
    os.makedirs(os.path.join(cell_dir(str(out), "dcbh", 8), RUN_FOLDER))
    start_cell(str(out), "dcbh", 8, _settings(data, out))  # today's behaviour: it resumes
    with pytest.raises(CellSettingsError, match="batch_size: 16 -> 32"):
        start_cell(str(out), "dcbh", 8, _settings(data, out, batch_size=32))


# ------------------------------------------------------ a finished cell's method (fix 2)
def test_a_finished_cell_of_another_method_config_is_refused(data, tmp_path):
    """A default of the method changed since the cell was made (simulated: the cell records
    another quantization_weight): refused like any other setting, naming it."""
    out = tmp_path / "out"
    settings = _settings(data, out)
    config = cell_record("dcbh", 8, settings)["method_config"]
    _finished(out, "dcbh", 8, settings, method_config={**config, "quantization_weight": 0.5})
    with pytest.raises(CellSettingsError) as refused:
        finished_cell(str(out), "dcbh", 8, settings)
    assert str(refused.value) == (
        f"{cell_dir(str(out), 'dcbh', 8)} was made with other settings "
        f"(method_config.quantization_weight: 0.5 -> {config['quantization_weight']!r}); use "
        "a new --out, or the same settings to resume")


def test_a_cell_made_before_a_later_setting_is_reused_where_its_old_value_is_the_default(
        data, tmp_path):
    """DFH's distillation came later (added_later: "logits", still the default): a cell
    without it is reused; DDAH's batch_norm_statistics came later as both_passes and its
    default is now attended: a cell without it was made with both_passes, refused."""
    out = tmp_path / "out"
    for row, key in (("dfh", "distillation"), ("ddah", "batch_norm_statistics")):
        settings = _settings(data, out, row=row, methods=[row])
        config = cell_record(row, 8, settings)["method_config"]
        _finished(out, row, 8, settings,
                  method_config={k: v for k, v in config.items() if k != key})
    dfh = _settings(data, out, row="dfh", methods=["dfh"])
    assert finished_cell(str(out), "dfh", 8, dfh)["method"] == "dfh"
    with pytest.raises(CellSettingsError, match=r"\(method_config.batch_norm_statistics: "
                                                r"'both_passes' -> 'attended'\)"):
        finished_cell(str(out), "ddah", 8, _settings(data, out, row="ddah", methods=["ddah"]))


def test_a_finished_cell_of_the_same_method_config_is_reused(data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    settings = _settings(data, out)
    _finished(out, "dcbh", 8, settings)
    assert finished_cell(str(out), "dcbh", 8, settings)["bits"] == 8
    record = json.load(open(os.path.join(cell_dir(str(out), "dcbh", 8), CELL_FILE)))
    del record["method_config"]  # a record without any: compared on its settings alone
    write_json_atomic(os.path.join(cell_dir(str(out), "dcbh", 8), CELL_FILE), record)
    assert finished_cell(str(out), "dcbh", 8, settings) is not None


# ------------------------------------------------------------ rows: bounds, spellings
def test_a_row_wider_than_the_width_bound_is_refused():
    with pytest.raises(ValueError, match=r"row 'dcbh@1000': the width after '@' must be <= 8 "
                                         r"\(the original is 1.0"):
        registry.parse_row("dcbh@1000")
    assert registry.parse_row("dcbh@8") == ("dcbh", 8.0)


@pytest.mark.parametrize("row, canonical", [
    ("ddah@1.0", "ddah@1"), ("ddah@01", "ddah@1"), ("ddah@1", "ddah@1"),
    ("ddch@0.5", "ddch@0.5"), ("ddch@.50", "ddch@0.5"), ("dcbh@0.31", "dcbh@0.31"),
    ("dcbh@0.1234567", "dcbh@0.1234567"), ("ddah", "ddah"), ("itq", "itq"),
])
def test_a_row_has_one_spelling_and_existing_folders_keep_theirs(row, canonical):
    assert registry.canonical_row(row) == canonical
    assert registry.check_methods([row]) == [canonical]


def test_two_spellings_of_one_row_are_refused():
    with pytest.raises(ValueError, match=r"rows 'ddah@1' and 'ddah@1.0' are one row "
                                         r"\('ddah@1'\): give it once"):
        registry.check_methods(["ddah@1", "ddah@1.0", "ddah@01"])
    assert registry.check_methods(["ddah@1", "ddah@1"]) == ["ddah@1"]  # the same spelling


def test_a_row_at_the_tables_own_width_beside_the_plain_row_is_refused():
    with pytest.raises(ValueError, match=r"rows 'ddah' and 'ddah@0.25' are one cell at "
                                         r"--width_multiplier 0.25"):
        registry.check_methods(["ddah", "ddah@0.25"], 0.25)
    assert registry.check_methods(["ddah", "ddah@0.25"], 1.0) == ["ddah", "ddah@0.25"]
    assert registry.check_methods(["ddah@0.25"], 0.25) == ["ddah@0.25"]  # alone: its folder


@pytest.mark.slow  # starts a process
def test_the_command_line_refuses_a_too_wide_row_before_any_cell(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "common.reproduce", "--methods", "itq,dcbh@1000", "--bits", "8",
         "--data_dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: row 'dcbh@1000': the width after '@' must be <= 8 (the original "
                      "is 1.0; a wider backbone exhausts memory)"]
    assert not os.path.exists(tmp_path / "out" / "cells")


# ------------------------------------------------------------------ --finished_only, warning
def test_finished_only_writes_the_tables_while_a_harness_holds_the_folder(data, tmp_path,
                                                                          monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(harness, "environment", lambda: {})
    _interrupted(out, "dcbh", 8, _settings(data, out))  # "still training"
    reproduce(_config(out, methods=["itq"]), data)
    monkeypatch.setattr(cells_module, "run_cell", _no_run)
    monkeypatch.setattr(isolation, "run_cell_process", _no_run)
    with run_lock(str(out)):  # as the running harness holds it
        got = reproduce(_config(out, finished_only=True), data)
    assert sorted(got) == [("itq", 8, 0)]
    assert "**Not finished: 1 of 2 cells**" in (out / RESULTS_MD).read_text()
    assert (out / RESULTS_CSV).read_text().count("\nitq,8,0,") == 2
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


@pytest.mark.parametrize("checkpoint, fraction, warned", [
    ("last", 0.1, True), ("best_loss", 0.1, True), ("best_map", 0.1, False),
    ("last", 0.0, False)])
def test_a_validation_split_that_chooses_nothing_is_warned_about(data, tmp_path, monkeypatch,
                                                                 checkpoint, fraction, warned):
    warnings = []
    monkeypatch.setattr(harness.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    monkeypatch.setattr(harness, "environment", lambda: {})
    monkeypatch.setattr(harness, "write_figures", lambda *a: ["x.png"])
    reproduce(_config(tmp_path / "out", methods=["dcbh"], finished_only=True,
                      checkpoint=checkpoint, validation_fraction=fraction), data)
    assert warnings == ([f"--validation_fraction {fraction:g} holds that share of the train "
                         "split out of training and of the database, but --checkpoint "
                         f"{checkpoint} does not choose its state on it: use "
                         "--validation_fraction 0 to train on all of it"] if warned else [])


# ------------------------------------------------------------- end to end, real training
def _run(module, args, env_extra=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # trains
def test_a_killed_cell_resumes_only_with_its_settings_alone_and_in_the_harness(tmp_path):
    """Killed after epoch 1 of 2 (lone run_cell, row spelled ddah@0.06250); other settings are
    refused by a lone run and by the harness (exit 2, naming the cell and settings); the
    original ones finish it, into the one folder of the row (ddah@0.0625)."""
    out = tmp_path / "out"
    common = ["--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
              "--synthetic_num_identities", "5", "--synthetic_train_per_identity", "6",
              "--synthetic_test_per_identity", "2", "--bits", "8", "--epochs", "2",
              "--eval_every", "0", "--out", str(out)]
    killed = _run("common.reproduce.run_cell", [*common, "--method", "ddah@0.06250",
                                                "--batch_size", "16"],
                  {"FACE_HASHING_CRASH_AT": "train:saved@1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = cell_dir(str(out), "ddah@0.0625", 8)
    assert {RUN_FOLDER, STARTED_FILE} <= set(os.listdir(folder))
    assert CELL_FILE not in os.listdir(folder)
    refusal = (f"error: {folder} was started with other settings (batch_size: 16 -> 8) and its "
               "interrupted training resumes only with them; use a new --out, or the original "
               "settings to resume it")
    alone = _run("common.reproduce.run_cell", [*common, "--method", "ddah@0.0625",
                                               "--batch_size", "8"])
    assert alone.returncode == 2 and refusal in alone.stderr.splitlines(), alone.stderr[-2000:]
    flags = ["--dataset", "synthetic", "--data_dir", str(tmp_path / "data"), "--bits", "8",
             "--epochs", "2", "--eval_every", "0", "--out", str(out), "--methods", "ddah@.0625"]
    harness_run = _run("common.reproduce", [*flags, "--batch_size", "8"])
    assert harness_run.returncode == 2 and refusal in harness_run.stderr.splitlines(), \
        harness_run.stderr[-2000:]
    resumed = _run("common.reproduce", [*flags, "--batch_size", "16"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    cell = json.load(open(os.path.join(folder, CELL_FILE)))
    assert cell["settings"]["batch_size"] == 16 and cell["state_epoch"] in (1, 2)
    run_config = json.load(open(os.path.join(folder, RUN_FOLDER, "run_config.json")))
    assert not run_config.get("setting_changes")
