"""A run folder's config file: the one reader and writer of ``run_config.json``.

Why one module: training writes the file and checks a resumed run against it, a saved
run is rebuilt from it (export, evaluation, face search), and the GAN keeps its own run
config (``config.json``) in the same way. Reading such a file can meet anything a disk or
a person leaves there (truncated JSON, another program's file, a hand edit with a NaN,
nesting deep enough to exhaust Python's stack); every reader goes through
:func:`read_config_file`, which refuses all of it with one error naming the file and the
reason, and writes go through :func:`write_config_file` (atomic).

What ``run_config.json`` records (``FORMAT`` 1): the method's settings (``method``), the
class count, the data's description, the train split's normalisation (baked into every
export), the training settings, the precision policy and the library versions, with the
times it was created and last updated and the history of settings changed on resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

from absl import logging

from common.errors import ProjectError
from common.io.atomic import write_json_atomic

RUN_CONFIG = "run_config.json"
FORMAT = 1
MAX_BYTES = 16 * 2**20     # a run config is a few kB; anything this large is not one
# Training settings added after runs were first made, with the value those runs had.
TRAIN_SETTINGS_BEFORE_THEY_EXISTED = {"sparse_adam": "keras", "eval_batch_norm": "moving"}


class RunConfigError(ProjectError, ValueError):
    """A run folder's config file is missing, unreadable, damaged or another program's."""


class RunConfigMismatchError(RunConfigError):
    """``model_dir`` holds a run whose model or data differ from the requested ones."""


def read_config_file(path: str, kind: str | None = None,
                     required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run folder's JSON config object, checked.

    Args:
        path: the file.
        kind: when given, the object's ``"kind"`` must be this.
        required: keys the object must have.

    Raises:
        RunConfigError: missing, too large, not JSON, nested too deep, not an object, of
            another kind, or without a required key (the message names ``path``).
    """
    try:
        if os.path.getsize(path) > MAX_BYTES:
            raise RunConfigError(f"{path}: {os.path.getsize(path)} bytes, too large for a run "
                                 "config; the run folder cannot be trusted")
        with open(path, encoding="utf-8") as f:
            config = json.load(f, parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise RunConfigError(f"{path}: not found") from None
    except RecursionError:
        raise RunConfigError(f"{path}: damaged (JSON nested too deeply)") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise RunConfigError(f"{path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise RunConfigError(f"{path}: not a run config (expected a JSON object)")
    if kind is not None and config.get("kind") != kind:
        raise RunConfigError(f"{path}: not a {kind} run's config (kind is "
                             f"{config.get('kind')!r})")
    missing = [key for key in required if key not in config]
    if missing:
        raise RunConfigError(f"{path}: missing field {missing[0]!r}")
    return config


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a valid value in a run config")


def write_config_file(path: str, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path`` atomically (a kill leaves the old file or the new)."""
    write_json_atomic(path, config)


# ------------------------------------------------------------------ run_config.json
def jsonable(obj: Any) -> Any:
    """``obj`` as JSON would give it back (numpy numbers and paths as plain values)."""
    return json.loads(json.dumps(obj, default=str))


def make_run_config(method_config: dict[str, Any], data, train_config: Any,
                    policy: str, versions: dict[str, str]) -> dict[str, Any]:
    """What ``run_config.json`` records: enough to rebuild the model for export."""
    return jsonable({
        "format": FORMAT,
        "method": method_config,
        "num_classes": int(data.num_classes),
        "dataset": data.description,
        "normalization": {"mean": data.normalization.mean, "std": data.normalization.std},
        "train_config": dataclasses.asdict(train_config),
        "precision_policy": policy,
        "versions": versions,
    })


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def check_values(config: dict[str, Any], path: str) -> None:
    """Refuse a run config whose values would silently give wrong codes.

    The normalisation is baked into every export: a NaN there makes every code +1.
    """
    if not isinstance(config["method"], dict) or not isinstance(config["method"].get("method"),
                                                                str):
        raise RunConfigError(f"{path}: field 'method' does not name a method")
    classes = config["num_classes"]
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise RunConfigError(f"{path}: num_classes must be a positive integer, got {classes!r}")
    norm = config["normalization"]
    if not isinstance(norm, dict) or not _number(norm.get("mean")) or \
            not _number(norm.get("std")) or norm["std"] < 0:
        raise RunConfigError(f"{path}: damaged normalization {norm!r} (mean and std must be "
                             "finite numbers, std >= 0); the run folder cannot be trusted")
    if "dataset" in config and not isinstance(config["dataset"], dict):
        raise RunConfigError(f"{path}: field 'dataset' is not an object")


def read_run_config(model_dir: str) -> dict[str, Any]:
    """``model_dir/run_config.json`` of a training run, its values checked.

    Raises:
        RunConfigError: the folder or the file is missing, or the file is damaged.
    """
    if not os.path.isdir(model_dir):
        raise RunConfigError(f"{model_dir}: folder does not exist")
    path = os.path.join(model_dir, RUN_CONFIG)
    if not os.path.exists(path):
        raise RunConfigError(f"{path}: not found; is {model_dir} a training run folder (the "
                             "--model_dir of a train command)?")
    config = read_config_file(path, required=("method", "num_classes", "normalization"))
    check_values(config, path)
    return config


def identity(run_config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run config that fix the model and its checkpoint layout."""
    dataset = run_config.get("dataset", {})
    return {
        "method": run_config.get("method"),
        "num_classes": run_config.get("num_classes"),
        # extra rows' count and digest: absent (None) without extra rows and in older runs;
        # the validation split (fraction, seed, images): absent without one. Another split
        # of the same size would train on rows the kept states were chosen on.
        "dataset": {k: dataset.get(k) for k in ("dataset", "train_images", "test_images",
                                                "validation", "extra_train_images",
                                                "extra_train_sha256")},
        # float16 adds a loss-scale optimizer: another checkpoint layout.
        "precision_policy": run_config.get("precision_policy", "float32"),
    }


def check_resumable(old: dict[str, Any], new: dict[str, Any], model_dir: str) -> None:
    """Raise RunConfigMismatchError when ``new`` cannot continue the run ``old`` describes."""
    a, b = identity(old), identity(new)
    differences = [f"{key}: {a[key]!r} -> {b[key]!r}" for key in a if a[key] != b[key]]
    # Each split's pixel statistics: another folder of the same size. The test split's
    # matters too: the run's cached figures, and the states chosen on them, are of its own.
    test_a = old.get("dataset", {}).get("test_normalization") or {}
    test_b = new.get("dataset", {}).get("test_normalization") or {}
    for split, norm_a, norm_b in (("train", old.get("normalization", {}),
                                   new.get("normalization", {})), ("test", test_a, test_b)):
        for key in ("mean", "std"):
            x, y = norm_a.get(key), norm_b.get(key)
            if x is not None and y is not None and \
                    not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9):
                differences.append(f"{split} normalization {key}: {x} -> {y} (different data)")
    if differences:
        raise RunConfigMismatchError(
            f"{model_dir} holds a run with different settings ({'; '.join(differences)}); "
            "it cannot be resumed with these. Use a new --model_dir (or the original settings).")


def read_for_resume(model_dir: str) -> dict[str, Any]:
    """The run config of a run that has checkpoints; refuses what cannot be checked.

    Without it the new settings could not be compared with the run's (another data
    set's normalisation would train on silently), so a missing or damaged file stops.
    """
    path = os.path.join(model_dir, RUN_CONFIG)
    if not os.path.exists(path):
        raise RunConfigMismatchError(
            f"{path}: missing, but {model_dir} holds checkpoints; without it this run's "
            "model and data cannot be checked. Put the file back, or use a new --model_dir.")
    try:
        return read_config_file(path)
    except RunConfigError as exc:
        raise RunConfigMismatchError(f"{exc}; put a good copy back, or use a new "
                                     "--model_dir") from None


def record_setting_changes(old: dict[str, Any], new: dict[str, Any], epoch: int) -> None:
    """Carry the run's settings history into ``new`` and log what changes now.

    Every training setting is applied on resume (the learning rate included: it is
    set after the optimizer's state is restored), so a change is recorded with the
    epoch from which it applies, never logged while the old value stays in use.
    """
    # Settings added later: what a run made before them did.
    before = {**TRAIN_SETTINGS_BEFORE_THEY_EXISTED, **old.get("train_config", {})}
    changed = {k: [before.get(k), v] for k, v in new["train_config"].items()
               if before.get(k) != v and k != "model_dir"}  # a moved folder trains the same
    history = list(old.get("setting_changes", []))
    if changed:
        history.append({"from_epoch": epoch + 1, "changed": changed})
        logging.info("training settings changed; applied from epoch %d: %s", epoch + 1,
                     ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    if history:
        new["setting_changes"] = history


def start(model_dir: str, method_config: dict[str, Any], complete, data, train_config,
          policy: str, replicas: int, write: bool = True) -> dict[str, Any]:
    """The run config of a training that starts or resumes in ``model_dir``: checked
    against the run there (RunConfigMismatchError when it cannot continue it), its
    settings history carried on, then written (unless ``write`` is False: a worker that is
    not the chief, or a training that writes it with :func:`write_run_config` once nothing
    can refuse the run any more: a resume is refused by a damaged ``last`` state only when
    it is restored, and a refused resume must leave the file as it was, without settings
    changes that never applied). ``complete`` fills a recorded method config's later
    settings."""
    import keras
    import tensorflow as tf

    from common.runs.checkpoints.store import read_index

    new = make_run_config(method_config, data, train_config, policy,
                          {"tensorflow": tf.__version__, "keras": keras.__version__})
    new["replicas"] = replicas
    last = read_index(model_dir)["slots"].get("last")
    if last is not None:
        old = read_for_resume(model_dir)
        if isinstance(old.get("method"), dict):  # settings the run predates: their value then
            old["method"] = complete(old["method"])
        check_resumable(old, new, model_dir)
        record_setting_changes(old, new, int(last["epoch"]))
        if old.get("created"):
            new["created"] = old["created"]
    new.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    new["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if write:
        write_run_config(model_dir, new)
    return new


def write_run_config(model_dir: str, config: dict[str, Any]) -> None:
    """Write ``config`` (what :func:`start` returned) as ``model_dir``'s run config."""
    write_config_file(os.path.join(model_dir, RUN_CONFIG), config)
