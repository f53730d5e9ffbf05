"""One cell of the table: a method at a bit length, trained (or fitted), coded, evaluated.

A cell lives in ``OUT/cells/<row>_<bits>/`` (``<row>_<bits>_s<seed>/`` for seeds other
than 0; a row is a method, or ``method@width``): ``started.json`` (a deep cell's settings,
written before its training starts), ``run/`` (the training run folder of a deep method,
resumable), ``codes.npz`` (query and database codes with labels) and, written last and
atomically, ``cell.json`` (figures, curves, settings, time, and the command that re-runs
the cell alone). A cell with a ``cell.json`` for the same settings is done and never
redone; an interrupted deep cell resumes only with the settings it was started with.
"Settings" are the table's (:func:`common.reproduce.harness.cell_settings`) and the
method's full config (``method_config``), compared by :func:`settings_changes`.

:func:`run_cell` works in the calling process: the harness calls it for the baselines
and, through ``python -m common.reproduce.run_cell``, in a fresh process per deep cell
(common/reproduce/isolation.py says why).
"""

from __future__ import annotations

from common.errors import ProjectError
import os
import time
from typing import Any

import numpy as np
from absl import logging

from common.metrics import METRIC_KEYS, retrieval_metrics
from common.reproduce import methods as registry
from common.reproduce.curves import precision_at_k_curve, radius_curve
from common.io import json_files
from common.io.atomic import write_json_atomic
from common.reproduce.layout import CELL_FILE, CODES_FILE, RUN_FOLDER, STARTED_FILE, cell_dir

HAMMINGS = ("exact", "legacy")


# Settings added after cells were first written, with the value a cell made before them had.
LATER_SETTINGS = {"deterministic": False, "sparse_adam": "keras", "validation_fraction": 0.0,
                  "validation_seed": 0, "extra_train_images": 0, "extra_train_sha256": None}


class CellSettingsError(ProjectError, ValueError):
    """A finished cell in the output folder was made with other settings."""


def read_cell(out: str, method: str, bits: int, seed: int = 0,
              name: str = CELL_FILE) -> dict[str, Any] | None:
    """The cell's ``cell.json`` (or its file ``name``), None where it is absent."""
    path = os.path.join(cell_dir(out, method, bits, seed), name)
    if not os.path.exists(path):
        return None
    try:
        cell = json_files.load(path)
    except (OSError, ValueError) as exc:
        raise CellSettingsError(f"{path}: damaged ({exc}); delete the file to run the cell "
                                "again") from None
    if not isinstance(cell, dict):
        raise CellSettingsError(f"{path}: damaged (not a JSON object); delete the file to run "
                                "the cell again")
    return cell


def cell_record(method: str, bits: int, settings: dict[str, Any]) -> dict[str, Any]:
    """What a cell is compared on: its settings and its method's full config
    (``method_config``, as the cell will record it; made without TensorFlow).

    Raises:
        ValueError: the row's method refuses these settings (naming the row).
    """
    try:
        config = registry.method_config(method, bits, settings.get("width_multiplier"),
                                        settings.get("seed", 0))
    except ValueError as exc:
        raise ValueError(f"row {method!r} at {bits} bits: {exc}") from None
    return {"method": method, "bits": bits, "settings": settings, "method_config": config}


def settings_changes(made: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings in which the record ``made`` (a cell.json or started.json) differs from
    ``wanted`` (:func:`cell_record`), as "name: then -> now".

    A setting added after ``made`` was written counts at the value that reproduces what
    it did: LATER_SETTINGS for the table's, the method's ``added_later`` for its config
    (common.methods.settings), so older cells stay reusable while a changed default of
    a method refuses them. A record without any ``method_config`` is compared on its
    settings alone.
    """
    made_with = {**LATER_SETTINGS, **made["settings"]}
    settings = {**LATER_SETTINGS, **wanted["settings"]}
    # a setting absent on one side counts as None there (as the message shows it)
    changed = [(k, made_with.get(k), settings.get(k)) for k in sorted({*settings, *made_with})
               if made_with.get(k) != settings.get(k)]
    if made.get("method_config") is not None:
        then = registry.complete_method_config(made["method_config"])
        now = registry.complete_method_config(wanted["method_config"])
        changed += [(f"method_config.{k}", then.get(k), now.get(k))
                    for k in sorted({*then, *now}) if then.get(k) != now.get(k)]
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in changed]


def finished_cell(out: str, method: str, bits: int,
                  settings: dict[str, Any]) -> dict[str, Any] | None:
    """The cell's ``cell.json`` if it is done with these settings, None if not done.

    ``settings`` are the cell's own (its seed and its row's width included); the
    method's config is compared too (:func:`settings_changes`).

    Raises:
        CellSettingsError: it is done, with other settings.
    """
    seed = settings.get("seed", 0)
    done = read_cell(out, method, bits, seed)
    if done is None:
        return None
    changed = settings_changes(done, cell_record(method, bits, settings))
    if changed:
        raise CellSettingsError(
            f"{cell_dir(out, method, bits, seed)} was made with other settings "
            f"({'; '.join(changed)}); use a new --out, or the same settings to resume")
    return done


def check_started_cell(out: str, method: str, bits: int, settings: dict[str, Any]) -> None:
    """Refuse to resume an interrupted deep cell with other settings than it started with.

    Its ``run/`` folder would take them as ordinary setting changes (another batch size
    from the next epoch on, fewer epochs than it trained), and its ``cell.json`` would
    then claim settings its run did not have. A cell whose ``run/`` does not exist yet
    trained nothing: any settings start it. One from before ``started.json`` existed
    (``run/`` without it) resumes as before, unchecked.

    Raises:
        CellSettingsError: started with other settings.
    """
    seed = settings.get("seed", 0)
    folder = cell_dir(out, method, bits, seed)
    if not os.path.isdir(os.path.join(folder, RUN_FOLDER)):
        return
    started = read_cell(out, method, bits, seed, STARTED_FILE)
    if started is None:
        return
    changed = settings_changes(started, cell_record(method, bits, settings))
    if changed:
        raise CellSettingsError(
            f"{folder} was started with other settings ({'; '.join(changed)}) and its "
            "interrupted training resumes only with them; use a new --out, or the original "
            "settings to resume it")


def start_cell(out: str, method: str, bits: int, settings: dict[str, Any]) -> None:
    """Before a deep cell trains: check it may resume (:func:`check_started_cell`), then
    record the settings it runs with in ``started.json`` (atomically)."""
    check_started_cell(out, method, bits, settings)
    folder = cell_dir(out, method, bits, settings.get("seed", 0))
    if os.path.isdir(os.path.join(folder, RUN_FOLDER)) and \
            not os.path.exists(os.path.join(folder, STARTED_FILE)):
        logging.info("%s %d bits: resuming a cell started before %s existed; its settings "
                     "are recorded now", method, bits, STARTED_FILE)
    write_json_atomic(os.path.join(folder, STARTED_FILE), cell_record(method, bits, settings))


def _deep_codes(method_name: str, bits: int, data, settings: dict[str, Any], folder: str):
    from common.models.size import model_size
    from common.training.saved_run import load_run
    from common.training.evaluate import compute_codes
    from common.training.loop import TrainConfig, train

    method = registry.make_deep_method(method_name, bits, settings["width_multiplier"])
    config = TrainConfig(epochs=settings["epochs"], model_dir=os.path.join(folder, RUN_FOLDER),
                         batch_size=settings["batch_size"], shuffle=settings["shuffle"],
                         seed=settings["seed"], eval_every=settings["eval_every"],
                         deterministic=settings.get("deterministic", False),
                         sparse_adam=settings.get("sparse_adam", "keras"), log_every_steps=0)
    train(method, data, config)
    run = load_run(type(method), config.model_dir, settings["checkpoint"])
    queries = compute_codes(run.model, run.method, data.test_images)
    database = compute_codes(run.model, run.method, data.train_images)
    validation = (run.record.get("metrics") or {}) if data.has_validation else {}
    return queries, database, {
        "checkpoint": settings["checkpoint"], "state_epoch": run.record.get("epoch"),
        "method_config": run.method.config(), "size": model_size(run.method, run.model),
        "selected_on": "validation" if data.has_validation else "test",
        "validation_figures": {k: validation[k] for k in METRIC_KEYS if k in validation}}


def _baseline_codes(method_name: str, bits: int, data, settings: dict[str, Any]):
    model = registry.make_baseline(method_name, bits, settings["seed"])
    model.fit(data.train_images.reshape(len(data.train_images), -1))
    queries = model.project(data.test_images.reshape(len(data.test_images), -1))
    database = model.project(data.train_images.reshape(len(data.train_images), -1))
    return queries.astype(np.float32), database.astype(np.float32), {
        "method_config": {"method": method_name, "num_bits": bits, "seed": settings["seed"]},
        "size": _baseline_size(model, data.train_images[0].size)}


def _baseline_size(model, dims: int) -> dict[str, int]:
    """A baseline's fitted parameters (mean, projection, ITQ's rotation) and the
    multiply-adds of coding one image (its projection: dims x bits, then bits x bits)."""
    bits = model.num_bits
    rotation = bits * bits if getattr(model, "rotation", None) is not None else 0
    return {"trainable_weights": dims + dims * bits + rotation,
            "multiply_adds": dims * bits + rotation}


def run_cell(out: str, method: str, bits: int, data, settings: dict[str, Any],
             command: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train/fit, code and evaluate one cell here unless it is already done; returns cell.json.

    ``command`` (common.reproduce.isolation.command_record) is recorded in cell.json:
    the command line that re-runs this cell alone.
    """
    done = finished_cell(out, method, bits, settings)
    if done is not None:
        logging.info("%s %d bits: done earlier, skipped", method, bits)
        return done
    folder = cell_dir(out, method, bits, settings.get("seed", 0))
    os.makedirs(folder, exist_ok=True)
    if registry.is_deep(method):
        start_cell(out, method, bits, settings)
    start = time.perf_counter()
    logging.info("%s %d bits: %s", method, bits,
                 "training" if registry.is_deep(method) else "fitting")
    if registry.is_deep(method):
        queries, database, extra = _deep_codes(method, bits, data, settings, folder)
    else:
        queries, database, extra = _baseline_codes(method, bits, data, settings)
    sign = lambda codes: np.where(codes >= 0, 1, -1).astype(np.int8)  # noqa: E731
    np.savez_compressed(os.path.join(folder, CODES_FILE), query_codes=sign(queries),
                        query_labels=data.test_labels, db_codes=sign(database),
                        db_labels=data.train_labels)
    args = (queries, data.test_labels, database, data.train_labels)
    figures = {h: retrieval_metrics(*args, top_k=settings["top_k"], radius=settings["radius"],
                                    hamming=h, ties=settings["ties"]) for h in HAMMINGS}
    curves = {"radius": radius_curve(*args, bits),
              "precision_at_k": precision_at_k_curve(*args, ties=settings["ties"])}
    cell = {"method": method, "bits": bits, "settings": settings, "figures": figures,
            "curves": curves, "wall_seconds": time.perf_counter() - start, **extra,
            "command": command}
    write_json_atomic(os.path.join(folder, CELL_FILE), cell)
    logging.info("%s %d bits: mAP %.4f (exact) / %.4f (legacy) in %.0f s", method, bits,
                 figures["exact"]["map"], figures["legacy"]["map"], cell["wall_seconds"])
    return cell
