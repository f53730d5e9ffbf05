"""A finished (or running) training folder as an object: rebuild, evaluate, export.

Why: export and re-evaluation need nothing but ``--model_dir``. ``run_config.json``
records the method's settings, the class count, the data folders and the train
split's normalisation, so the model is rebuilt exactly and any checkpoint slot
loaded into it, by every method through the same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

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


def load_run(method_cls, model_dir: str, slot: str = "best_map",
             as_trained: bool = False) -> LoadedRun:
    """Rebuild the run's method and model as the run did and load the slot's weights.

    Args:
        method_cls: the method the run must be of: a
            :class:`common.methods.base.HashingMethod` subclass (``DCBH``, ...) or its
            registry name ("dcbh"); None: whichever method the run records (found in the
            registry, common.methods.registry).
        model_dir: the run folder.
        slot: "best_map", "best_loss" or "last".
        as_trained: build the model under the run's recorded precision policy
            (``--mixed_precision``: mixed_bfloat16 / mixed_float16), the one its
            evaluations ran under, so that its figures are reproduced exactly; the global
            policy is set back afterwards. False: the current global policy (float32
            unless a caller set another: what an export serves).

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
    policy = config.get("precision_policy", "float32") if as_trained else None
    with _global_policy(policy, model_dir):
        model = method.build_model(int(config["num_classes"]))
        try:
            record = restore_model_weights(model, model_dir, slot)
        except CheckpointError as exc:
            hint = (" (best_map is set when a run finishes or at its first evaluation; use "
                    "--checkpoint last or best_loss for a run in progress)"
                    if slot == "best_map" else "")
            raise RunFolderError(f"{exc}{hint}") from None
        bad = non_finite_variables(model.variables) or _non_finite_codes(method, model, config)
    if bad:
        raise RunFolderError(f"{os.path.join(model_dir, 'checkpoints', record['dir'])}: slot "
                             f"{slot!r} holds non-finite values ({', '.join(bad[:3])}); this "
                             "state is damaged and is neither evaluated nor exported")
    return LoadedRun(method, model, config, record, slot)


@contextlib.contextmanager
def _global_policy(policy: str | None, model_dir: str) -> Iterator[None]:
    """Keras's global precision policy set to ``policy`` inside (None: left as it is)."""
    if policy is None:
        yield
        return
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy(policy)
    except (TypeError, ValueError) as exc:
        raise RunFolderError(f"{os.path.join(model_dir, RUN_CONFIG)}: damaged precision_policy "
                             f"{policy!r} ({exc})") from None
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


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


def recorded_figures(record: dict[str, Any]) -> dict[str, Any]:
    """The retrieval figures a slot's record holds, each labelled with its query split.

    ``metrics``: the figures of the split that selects states (``"queries"``: "validation"
    with a validation split, else "test"; a record that predates the label is of the test
    split); ``test_metrics``: the test split's, which a run with a validation split records
    for its reported slots at its end (None before, or when the slot was never evaluated).
    Both as the run computed them (their protocol inside); nothing is evaluated here.
    """
    metrics = record.get("metrics")
    if isinstance(metrics, dict):
        metrics = {**metrics, "queries": metrics.get("queries", "test")}
    else:
        metrics = None
    test = record.get("test_metrics")
    if not isinstance(test, dict):
        test = metrics if metrics is not None and metrics["queries"] == "test" else None
    return {"metrics": metrics, "test_metrics": test}


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
                       "loss": run.record.get("loss"), **recorded_figures(run.record)},
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

    The folders are read as the run's recorded data set (a named one keeps its class
    count, so a subset of it with a few high labels is scored as it trained), and the
    model is rebuilt under the run's precision policy with its evaluation batch size, so
    the figures equal those the run reported for the state (an export serves float32
    codes: with ``--mixed_precision`` a few bits whose relaxed value lies near 0 can
    differ from the codes scored here).
    """
    from common.data import load_pickle_folder, to_nhwc
    from common.training.data import KNOWN_DATASETS, load_split_data
    from common.training.evaluate import evaluate_retrieval

    if train_dir and database_dir:
        raise ValueError("give --train_dir (the run's train split, moved) or --database_dir "
                         "(another database), not both")
    # Under the run's precision policy: its codes, hence its figures, are training's.
    run = load_run(method_cls, model_dir, slot, as_trained=True)
    recorded = run.run_config.get("dataset", {})
    train_dir = database_dir or train_dir or recorded.get("train_dir")
    test_dir = test_dir or recorded.get("test_dir")
    if not train_dir or not test_dir:
        raise RunFolderError(f"{model_dir}: the run does not record its data folders; "
                             "give --train_dir and --test_dir")
    validation = {} if database_dir else (recorded.get("validation") or {})
    # A named data set (a subset of FaceScrub, say) has its fixed class count, not its
    # largest label + 1: read as "folder", labels 500..509 would be refused as too sparse.
    # The synthetic set's folders are read as "folder" (its labels are 0..n-1).
    kind = recorded.get("dataset") if recorded.get("dataset") in KNOWN_DATASETS else "folder"
    data = load_split_data(kind, train_dir=train_dir, test_dir=test_dir,
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
    train_config = run.run_config.get("train_config")
    batch_size = train_config.get("eval_batch_size") if isinstance(train_config, dict) else None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        batch_size = 1024  # a run that predates the setting: its default
    figures = evaluate_retrieval(run.model, run.method, data, hamming=hamming, ties=ties,
                                 top_k=top_k, radius=radius, eval_batch_norm=eval_batch_norm,
                                 batch_size=batch_size)
    return {**figures, "slot": slot, "epoch": run.record.get("epoch"), "hamming": hamming,
            "ties": ties, "top_k": top_k, "radius": radius, "eval_batch_norm": eval_batch_norm,
            "precision_policy": run.run_config.get("precision_policy", "float32"),
            "validation_held_out": int(len(data.validation_labels)),
            "queries": int(len(data.test_labels)), "database": int(len(data.train_labels)),
            "database_dir": os.path.abspath(train_dir)}
