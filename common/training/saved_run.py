"""A finished (or running) training folder as an object: rebuild, evaluate, export.

Why: export and re-evaluation need nothing but ``--model_dir``. ``run_config.json``
records the method's settings, the class count, the data folders and the train
split's normalisation, so the model is rebuilt exactly and any checkpoint slot
loaded into it, by every method through the same code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from common.models.finite import non_finite_variables
from common.runs import run_config
from common.runs.checkpoints.layout import SLOTS, CheckpointError
from common.runs.checkpoints.store import restore_model_weights
from common.runs.run_config import RUN_CONFIG, RunConfigError

class RunFolderError(RunConfigError):
    """``model_dir`` is not a usable training run (missing, foreign or unreadable files)."""


def read_run_config(model_dir: str, method_name: str | None = None) -> dict[str, Any]:
    """``model_dir/run_config.json`` (common.runs.run_config), checked to belong to
    ``method_name`` when given.

    Raises:
        RunFolderError: no run there, a damaged file, or another method's run.
    """
    try:
        config = run_config.read_run_config(model_dir)
    except RunConfigError as exc:
        raise RunFolderError(str(exc)) from None
    name = config["method"].get("method")
    if method_name is not None and name != method_name:
        raise RunFolderError(f"{model_dir} holds a {name!r} run, not {method_name!r}; use "
                             f"python -m {name}_tf.export (or .evaluate) for it, or "
                             "python -m common.cli.export, which serves every method")
    return config


@dataclass
class LoadedRun:
    """A method, its model with a checkpoint's weights, and what the run recorded."""

    method: Any
    model: Any
    run_config: dict[str, Any]
    record: dict[str, Any]
    slot: str

    @property
    def codes_output(self) -> int:
        from common.methods.base import CODES
        return list(self.method.output_names).index(CODES)

    @property
    def normalization(self):
        from common.data.preprocess import Normalization
        norm = self.run_config["normalization"]
        return Normalization(mean=float(norm["mean"]), std=float(norm["std"]))


def load_run(method_cls, model_dir: str, slot: str = "best_map") -> LoadedRun:
    """Rebuild the run's method and model as the run did and load the slot's weights.

    Args:
        method_cls: the method the run must be of: a
            :class:`common.methods.base.HashingMethod` subclass (``DCBH``, ...) or its
            registry name ("dcbh"); None: whichever method the run records (found in the
            registry, common.methods.registry).
        model_dir: the run folder.
        slot: "best_map", "best_loss" or "last".

    Raises:
        RunFolderError: not a run of this method, or no checkpoint in that slot.
    """
    if slot not in SLOTS:
        raise ValueError(f"checkpoint slot must be one of {SLOTS}, got {slot!r}")
    expected = method_cls if isinstance(method_cls, str) or method_cls is None else \
        method_cls.name
    config = read_run_config(model_dir, expected)
    if not isinstance(method_cls, type):
        from common.methods.registry import UnknownMethodError, method_class

        try:
            method_cls = method_class(config["method"]["method"])
        except UnknownMethodError as exc:
            raise RunFolderError(f"{os.path.join(model_dir, RUN_CONFIG)}: {exc}") from None
    try:
        method = method_cls.from_config(config["method"])
    except (TypeError, ValueError) as exc:
        raise RunFolderError(f"{os.path.join(model_dir, RUN_CONFIG)}: cannot rebuild the "
                             f"method ({exc})") from None
    model = method.build_model(int(config["num_classes"]))
    try:
        record = restore_model_weights(model, model_dir, slot)
    except CheckpointError as exc:
        hint = (" (best_map is set when a run finishes or at its first evaluation; use "
                "--checkpoint last or best_loss for a run in progress)" if slot == "best_map"
                else "")
        raise RunFolderError(f"{exc}{hint}") from None
    bad = non_finite_variables(model.variables) or _non_finite_codes(method, model, config)
    if bad:
        raise RunFolderError(f"{os.path.join(model_dir, 'checkpoints', record['dir'])}: slot "
                             f"{slot!r} holds non-finite values ({', '.join(bad[:3])}); this "
                             "state is damaged and is neither evaluated nor exported")
    return LoadedRun(method, model, config, record, slot)


def _non_finite_codes(method, model, config: dict[str, Any]) -> list[str]:
    """["relaxed codes"] when the state's codes of a probe batch are not finite (finite but
    absurd weights, e.g. 1e30 after a diverged training), else []: such a state is neither
    evaluated nor exported, whatever data it would be given."""
    import numpy as np

    from common.data.preprocess import Normalization
    from common.training.evaluate import compute_codes

    norm = config["normalization"]
    pixels = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    images = Normalization(float(norm["mean"]), float(norm["std"])).apply(pixels)
    codes = compute_codes(model, method, images)
    return [] if np.all(np.isfinite(codes)) else ["relaxed codes of a probe batch"]


def export_run(method_cls, model_dir: str, export_dir: str, slot: str = "best_map") -> dict:
    """Export a run's checkpoint as a SavedModel serving binary codes (see common.export.writer).

    Returns:
        The content of ``export_dir/export_info.json``.
    """
    from common.export.folder import EXPORT_INFO, check_export_dir
    from common.export.writer import export_model

    check_export_dir(export_dir)  # refuse a folder it may not replace before loading anything
    run = load_run(method_cls, model_dir, slot)
    info = {
        "method": run.run_config["method"],
        "num_classes": int(run.run_config["num_classes"]),
        "checkpoint": {"slot": slot, "epoch": run.record.get("epoch"),
                       "loss": run.record.get("loss"),
                       "metrics": run.record.get("metrics")},
        "model_dir": os.path.abspath(model_dir),
        "dataset": run.run_config.get("dataset"),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # The method's inference part (DDAH: the attended pass only); its outputs keep the
    # positions of the model's, so the codes index is the same.
    export_model(run.method.inference_model(run.model), run.normalization, export_dir,
                 run.codes_output, info=info)
    with open(os.path.join(export_dir, EXPORT_INFO), encoding="utf-8") as f:
        return json.load(f)


def evaluate_run(method_cls, model_dir: str, slot: str = "best_map", hamming: str = "exact",
                 ties: str = "index", top_k: int = 50, radius: int = 2,
                 train_dir: str | None = None, test_dir: str | None = None,
                 database_dir: str | None = None,
                 eval_batch_norm: str = "moving") -> dict[str, Any]:
    """Retrieval figures of a run's checkpoint: the test split's queries against a database.

    The data folders come from ``run_config.json`` unless given (e.g. when the data
    moved); ``train_dir`` must hold the same train split (checked by its normalisation).

    ``database_dir`` replaces the train split as the database with another split (a
    gallery the model never trained on, or the originals of an augmented split, so
    that runs trained on different splits are scored against the same database). Its
    images are normalised with the run's recorded train constants, as an export
    does; the test split keeps its own, as in training.

    A run trained with a validation split is scored with the database it had: the train
    split without the rows it held out (the same draw, from the recorded fraction and
    seed). ``eval_batch_norm`` "batch" codes with each batch's own batch-norm statistics
    (the original DDAH's evaluation) instead of the moving ones.
    """
    from common.data import load_pickle_folder, to_nhwc
    from common.training.data import load_split_data
    from common.training.evaluate import evaluate_retrieval

    if train_dir and database_dir:
        raise ValueError("give --train_dir (the run's train split, moved) or --database_dir "
                         "(another database), not both")
    run = load_run(method_cls, model_dir, slot)
    recorded = run.run_config.get("dataset", {})
    train_dir = database_dir or train_dir or recorded.get("train_dir")
    test_dir = test_dir or recorded.get("test_dir")
    if not train_dir or not test_dir:
        raise RunFolderError(f"{model_dir}: the run does not record its data folders; "
                             "give --train_dir and --test_dir")
    validation = {} if database_dir else (recorded.get("validation") or {})
    data = load_split_data("folder", train_dir=train_dir, test_dir=test_dir,
                           validation_fraction=float(validation.get("fraction", 0.0)),
                           validation_seed=int(validation.get("seed", 0)))
    norm = run.normalization
    if database_dir:
        rows, _ = load_pickle_folder(database_dir)
        data = dataclasses.replace(data, train_images=to_nhwc(norm.apply(rows, out=rows)))
    elif data.num_classes > int(run.run_config["num_classes"]):
        raise RunFolderError(f"{train_dir}: labels up to {data.num_classes - 1} but the model "
                             f"has {run.run_config['num_classes']} classes")
    elif abs(data.normalization.mean - norm.mean) > 1e-4 * max(1.0, abs(norm.mean)) or \
            abs(data.normalization.std - norm.std) > 1e-4 * max(1.0, abs(norm.std)):
        raise RunFolderError(f"{train_dir}: not the train split this run was trained on "
                             f"(mean/std {data.normalization.mean:.4f}/"
                             f"{data.normalization.std:.4f}, run recorded {norm.mean:.4f}/"
                             f"{norm.std:.4f})")
    figures = evaluate_retrieval(run.model, run.method, data, hamming=hamming, ties=ties,
                                 top_k=top_k, radius=radius, eval_batch_norm=eval_batch_norm)
    return {**figures, "slot": slot, "epoch": run.record.get("epoch"), "hamming": hamming,
            "ties": ties, "top_k": top_k, "radius": radius, "eval_batch_norm": eval_batch_norm,
            "validation_held_out": int(len(data.validation_labels)),
            "queries": int(len(data.test_labels)), "database": int(len(data.train_labels)),
            "database_dir": os.path.abspath(train_dir)}
