"""The shared training loop: train, checkpoint, select, resume, report.

Why one loop for every method: the original's procedure (Adam, batches in file order,
per-epoch train/test loss and accuracy, a checkpoint whenever the epoch's mean train
loss is the lowest so far, retrieval evaluation of that checkpoint every 100 epochs)
does not depend on the network; a method only supplies its model and loss
(:class:`common.methods.base.HashingMethod`). A method may also split its variables among
several Adams (``optimizer_groups``: one forward per step, every group's gradients from
it, then the updates in the method's order; each Adam checkpointed) and set the learning
rate per epoch (``learning_rate``); by default one Adam trains everything at a constant rate.
A method trained in stages (``stage``, ``start_stage``: DFH's features, then codes) is told
its stage before every epoch; records carry it, and ``best_loss`` is kept per stage.

Differences from the original, on purpose:

* Evaluating the lowest-loss state does NOT roll training back to it. The original
  restored that checkpoint into its live session, so training silently continued
  from an older state after every evaluation; here the live weights are set aside,
  the ``best_loss`` weights evaluated, and the live weights put back.
* The original also saved its checkpoint at epoch 5 whatever the loss; that state then
  stood in for "lowest loss" though it was not. ``best_loss`` here only ever holds the
  lowest-loss state (``last`` covers resuming), of the current stage for a staged method.
* ``best_map`` is the evaluated state with the highest mAP; at the end of training
  the final (``last``) state is evaluated too and is a candidate as well.
* Mean losses are means over the epoch's batches (each batch's cost, as minimised).
"""

from __future__ import annotations

from common.errors import ProjectError, WorkFailedError
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from common.data.pipeline import ArrayPipeline
from common.methods.base import LOGITS, HashingMethod, OptimizerGroup
from common.metrics import HAMMING_MODES, METRIC_KEYS, TIE_MODES
from common.io import interrupts
from common.io.faults import crash_point
from common.runs.history import HISTORY, append_history_line, read_history_lines
from common.models.replica_ops import replica_global, replica_sum
from common.io.atomic import remove_stale_json_temps, write_json_atomic
from common.io.locks import run_lock
from common.runs.checkpoints.layout import CheckpointError
from common.runs.checkpoints.store import CheckpointStore, WorkerCheckpointStore, read_index, untracked_variables
from common.training.data import SplitData
from common.training.distribution import (DISTRIBUTIONS, DistributionError, distributed_epoch,
                                          distributed_steps, is_chief, make_strategy,
                                          replica_loss_scale, replica_values, strategy_tf_config,
                                          synchronize_batch_norm)
from common.training.evaluate import EVAL_BATCH_NORMS, evaluate_retrieval
from common.training.progress import EpochProgress
from common.training.sparse_gradients import (BEFORE_THE_OPTION, ORIGINAL_SPARSE_ADAM,
                                              SPARSE_ADAM_MODES, gradients_for_adam)

RUN_CONFIG = "run_config.json"
METRICS = "metrics.json"
TENSORBOARD = "tensorboard"
REPORTED_SLOTS = ("last", "best_loss", "best_map")
TRAIN_SETTINGS_BEFORE_THEY_EXISTED = {"sparse_adam": BEFORE_THE_OPTION, "eval_batch_norm": "moving"}
# What a state's cached figures were computed with when they did not say (older runs).
EVAL_SETTINGS_BEFORE_THEY_EXISTED = {"eval_batch_norm": "moving", "queries": "test"}


@dataclass(kw_only=True)
class TrainConfig:
    """How to train (the method's own settings live in the method).

    Attributes:
        epochs: total epochs of the run (a resumed run continues up to this number).
        model_dir: run folder: checkpoints, run_config.json, metrics.json, tensorboard/.
        batch_size: examples per step (original 256; the last batch holds the rest).
        learning_rate: Adam's step size (original 1e-3).
        adam_epsilon: Adam's epsilon; 1e-8 is TF1's default (Keras' is 1e-7).
        sparse_adam: how Adam takes a sparse gradient with repeated rows (the centers'):
            "tf1" sums the rows first, as the original's Adam did; "keras" is Keras 3's
            per-row update (common.training.sparse_gradients).
        shuffle: reshuffle every epoch (seeded by (seed, epoch)); the original did not.
        seed: seeds weights initialisation and shuffles.
        eval_every: evaluate retrieval every this many epochs (0 = only at the end).
        hamming, ties, top_k, radius: evaluation protocol (common.metrics).
        eval_batch_norm: how codes are computed: "moving" (inference mode) or "batch"
            (each batch's own statistics, the original DDAH's evaluation;
            common.training.evaluate.EVAL_BATCH_NORMS).
        mixed_precision: mixed_float16 on GPU (with loss scaling), mixed_bfloat16 on CPU.
        jit_compile: XLA-compile the training step.
        deterministic: deterministic TensorFlow ops (bit-exact reruns and resumes).
        distribution: "default" (one device), "mirrored" (the local GPUs, or the
            logical CPU devices) or "multi_worker" (the workers TF_CONFIG names, the
            chief alone writing ``model_dir``); ``batch_size`` is the global batch
            (common.training.distribution).
        log_every_steps: progress inside an epoch: a bar redrawn in place on a terminal,
            elsewhere a line every this many steps (0 = neither;
            common.training.progress).
        max_steps_per_epoch: cut epochs short (tests, smoke runs).
        eval_batch_size: batch size when computing codes.
    """

    epochs: int
    model_dir: str
    batch_size: int = 256
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-8
    sparse_adam: str = ORIGINAL_SPARSE_ADAM
    shuffle: bool = False
    seed: int = 0
    eval_every: int = 100
    hamming: str = "exact"
    ties: str = "index"
    top_k: int = 50
    radius: int = 2
    eval_batch_norm: str = "moving"
    mixed_precision: bool = False
    jit_compile: bool = False
    deterministic: bool = False
    distribution: str = "default"
    log_every_steps: int = 100
    max_steps_per_epoch: int | None = None
    eval_batch_size: int = 1024

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (bool(self.model_dir), "model_dir must be set"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.adam_epsilon > 0, f"adam_epsilon must be > 0, got {self.adam_epsilon}"),
            (self.sparse_adam in SPARSE_ADAM_MODES,
             f"sparse_adam must be one of {SPARSE_ADAM_MODES}, got {self.sparse_adam!r}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.distribution in DISTRIBUTIONS,
             f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}"),
            (not (self.jit_compile and self.distribution != "default"),
             "jit_compile is not supported with a distribution: XLA-compiling the replicas' "
             "step failed here (on logical CPU devices XLA reads one replica's variables from "
             "another device) and has not been verified on several GPUs"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.hamming in HAMMING_MODES,
             f"hamming must be one of {HAMMING_MODES}, got {self.hamming!r}"),
            (self.ties in TIE_MODES, f"ties must be one of {TIE_MODES}, got {self.ties!r}"),
            (self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}"),
            (self.radius >= 0, f"radius must be >= 0, got {self.radius}"),
            (self.eval_batch_norm in EVAL_BATCH_NORMS,
             f"eval_batch_norm must be one of {EVAL_BATCH_NORMS}, got {self.eval_batch_norm!r}"),
            (self.log_every_steps >= 0,
             f"log_every_steps must be >= 0, got {self.log_every_steps}"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
             f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}"),
            (self.eval_batch_size >= 1,
             f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def eval_settings(self) -> dict[str, Any]:
        return {"hamming": self.hamming, "ties": self.ties, "top_k": self.top_k,
                "radius": self.radius, "eval_batch_norm": self.eval_batch_norm}


class NonFiniteLossError(WorkFailedError, FloatingPointError):
    """The training loss became NaN or infinite; nothing of that state was saved."""

    def __init__(self, message: str, epoch: int, step: int, last_good_epoch: int):
        super().__init__(message)
        self.epoch, self.step, self.last_good_epoch = epoch, step, last_good_epoch


class NonFiniteStateError(NonFiniteLossError):
    """An epoch ended with non-finite weights, statistics or centers; it was not saved."""


class RunConfigMismatchError(ProjectError, ValueError):
    """``model_dir`` holds a run whose model or data differ from the requested ones."""


def non_finite_variables(variables) -> list[str]:
    """Names of the floating-point variables holding NaN or inf (empty when all is well)."""
    bad = []
    for variable in variables:
        value = np.asarray(variable.numpy())
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad.append(variable.path if hasattr(variable, "path") else variable.name)
    return bad


# ----------------------------------------------------------------------- run config
def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def make_run_config(method: HashingMethod, data: SplitData, config: TrainConfig) -> dict[str, Any]:
    """What ``run_config.json`` records: enough to rebuild the model for export."""
    return _jsonable({
        "format": 1,
        "method": method.config(),
        "num_classes": int(data.num_classes),
        "dataset": data.description,
        "normalization": {"mean": data.normalization.mean, "std": data.normalization.std},
        "train_config": dataclasses.asdict(config),
        "precision_policy": precision_policy(config.mixed_precision),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    })


def _identity(run_config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run config that fix the model and its checkpoint layout."""
    dataset = run_config.get("dataset", {})
    return {
        "method": run_config.get("method"),
        "num_classes": run_config.get("num_classes"),
        "dataset": {k: dataset.get(k) for k in ("dataset", "train_images", "test_images")},
        # float16 adds a loss-scale optimizer: another checkpoint layout.
        "precision_policy": run_config.get("precision_policy", "float32"),
    }


def check_resumable(old: dict[str, Any], new: dict[str, Any], model_dir: str) -> None:
    """Raise RunConfigMismatchError when ``new`` cannot continue the run ``old`` describes."""
    a, b = _identity(old), _identity(new)
    differences = [f"{key}: {a[key]!r} -> {b[key]!r}" for key in a if a[key] != b[key]]
    norm_a, norm_b = old.get("normalization", {}), new.get("normalization", {})
    for key in ("mean", "std"):
        x, y = norm_a.get(key), norm_b.get(key)
        if x is not None and y is not None and not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9):
            differences.append(f"train normalization {key}: {x} -> {y} (different data)")
    if differences:
        raise RunConfigMismatchError(
            f"{model_dir} holds a run with different settings ({'; '.join(differences)}); "
            "it cannot be resumed with these. Use a new --model_dir (or the original settings).")


def read_run_config_for_resume(path: str, model_dir: str) -> dict[str, Any]:
    """The run config of a run that has checkpoints; refuses what cannot be checked.

    Without it the new settings could not be compared with the run's (another data
    set's normalisation would train on silently), so a missing or damaged file stops.
    """
    if not os.path.exists(path):
        raise RunConfigMismatchError(
            f"{path}: missing, but {model_dir} holds checkpoints; without it this run's "
            "model and data cannot be checked. Put the file back, or use a new --model_dir.")
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
    except (OSError, ValueError) as exc:
        raise RunConfigMismatchError(f"{path}: unreadable ({exc}); put a good copy back, or "
                                     "use a new --model_dir") from None
    if not isinstance(old, dict):
        raise RunConfigMismatchError(f"{path}: not a run config (expected a JSON object)")
    return old


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


# ----------------------------------------------------------------------- history
def restore_history_line(model_dir: str, record: dict[str, Any]) -> bool:
    """Append the ``last`` state's history line if a kill lost it; True when appended.

    The line is saved inside the state's record before it is appended to
    ``history.jsonl``, so a kill between the two loses nothing.
    """
    entry = record.get("history")
    if not entry or any(h["epoch"] == entry["epoch"] for h in read_history(model_dir)):
        return False
    append_history_line(model_dir, entry)
    logging.info("history.jsonl: restored the line of epoch %d from its checkpoint",
                 entry["epoch"])
    return True


def read_history(model_dir: str) -> list[dict[str, Any]]:
    """Per-epoch records of a run, one per epoch (the latest line wins; torn lines skipped)."""
    return read_history_lines(model_dir, HISTORY)


# ----------------------------------------------------------------------- summaries
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written without the ``tensorboard`` package.

    ``tf.summary.scalar`` needs that package at run time; this writes the same
    record (a float32 scalar tagged for the "scalars" plugin) with the core op.
    """
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


# ----------------------------------------------------------------------- steps
def precision_policy(mixed: bool) -> str:
    """The Keras precision policy of a run: float32, or mixed float16 on GPU, bfloat16 on CPU."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def make_optimizer(config: TrainConfig, policy: str, variables) -> keras.optimizers.Optimizer:
    """Adam with TF1's defaults (loss-scaled under float16); variables built eagerly.

    Building now (not lazily at the first step) lets a checkpoint restore the moments
    and the iteration count at once instead of deferring them.
    """
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=0.9,
                                      beta_2=0.999, epsilon=config.adam_epsilon)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def _replica_scaled(method: HashingMethod, names: list[str], parts: list, labels) -> list:
    """The parts of one replica, scaled so that the replicas' sum is the global batch's."""
    reductions = method.loss_reductions()
    unnamed = [k for k in names if k not in reductions]
    if unnamed:
        raise ValueError(f"{method.name}.loss_reductions() does not name the loss parts "
                         f"{unnamed}: it cannot be trained with a distribution")
    local = tf.cast(tf.shape(labels)[0], tf.float32)
    total = replica_sum(local)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    return [p * replica_loss_scale(reductions[k], local, total, replicas)
            for k, p in zip(names, parts)]


def optimizer_groups(method: HashingMethod, model) -> list[OptimizerGroup]:
    """``method.optimizer_groups(model)``, checked: names unique, variables disjoint."""
    groups = list(method.optimizer_groups(model))
    if not groups:
        raise ValueError(f"{method.name}.optimizer_groups() lists no optimizer")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"{method.name}: optimizer group names repeat: {names}")
    seen: set[int] = set()
    for group in groups:
        ids = {id(v) for v in group.variables}
        if len(ids) != len(group.variables) or ids & seen:
            raise ValueError(f"{method.name}: optimizer group {group.name!r} shares variables "
                             "with another group (or lists one twice)")
        seen |= ids
    return groups


def optimizer_trackables(groups: list[OptimizerGroup], optimizers: list) -> dict[str, Any]:
    """Checkpoint keys of the optimisers: ``optimizer`` for one (every method's layout
    before several existed), ``optimizer_<group>`` for each of several."""
    if len(optimizers) == 1:
        return {"optimizer": optimizers[0]}
    return {f"optimizer_{g.name}": o for g, o in zip(groups, optimizers)}


def _group_objective(group: OptimizerGroup, loss, names: list[str], parts: list,
                     distributed: bool):
    """The scalar ``group`` minimises, from one forward's (replica-scaled) loss parts."""
    if group.objective is None:
        return loss
    by_name = dict(zip(names, parts))
    if callable(group.objective):
        if distributed:  # global-batch values: the objective may be non-linear in them
            by_name = {k: replica_global(v) for k, v in by_name.items()}
        return tf.cast(group.objective(by_name), tf.float32)
    unknown = [k for k in group.objective if k not in by_name]
    if unknown:
        raise ValueError(f"optimizer group {group.name!r} names loss parts {unknown} that "
                         f"loss_terms does not return ({names})")
    return tf.add_n([by_name[k] for k in group.objective])


def _with_coupled_decay(group: OptimizerGroup, optimizer, grads: list, replicas: int) -> list:
    """grad + rate * w (PyTorch's coupled Adam weight decay), loss-scaled like the grads;
    each replica adds its 1 / replicas share (the optimiser sums the replicas')."""
    if not group.coupled_weight_decay:
        return grads
    rate = group.coupled_weight_decay / replicas
    return [None if g is None else
            tf.convert_to_tensor(g) + optimizer.scale_loss(rate * tf.cast(v, g.dtype))
            for g, v in zip(grads, group.variables)]


def _make_steps(model, method: HashingMethod, optimizer, jit_compile: bool,
                sparse_adam: str = ORIGINAL_SPARSE_ADAM, strategy=None, batch_spec=None):
    """(train_step, test_step, part_names).

    The train step returns [loss, *parts, correct, images] of the (global) batch; with
    a ``strategy`` it takes the distributed batch (``batch_spec``: its element spec)
    and sums the replicas' figures. The test step returns [loss, *parts, correct] on
    one device.

    ``optimizer``: one optimiser per group of ``method.optimizer_groups(model)``, in
    that order (a list; a lone optimiser for a one-group method). The step runs one
    forward pass, computes every group's gradients from it, then applies them group
    after group (module :class:`common.methods.base.OptimizerGroup`).
    """
    groups = optimizer_groups(method, model)
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if len(optimizers) != len(groups):
        raise ValueError(f"{len(optimizers)} optimizers for the {len(groups)} optimizer groups "
                         f"of {method.name} ({[g.name for g in groups]})")
    plain = len(groups) == 1 and groups[0].is_plain(model)
    optimizer = optimizers[0]
    variables = model.trainable_variables
    names: list[str] = []

    def forward(images, labels, training, distributed=False):
        outputs = method.named_outputs(method.call_model(model, images, training))
        terms = method.loss_terms(model, outputs, labels)
        names[:] = list(terms)  # at trace time: the order of the parts in the result
        parts = [tf.cast(v, tf.float32) for v in terms.values()]
        if distributed:
            parts = _replica_scaled(method, names, parts, labels)
        loss = tf.add_n(parts)
        predicted = tf.argmax(outputs[LOGITS], axis=-1, output_type=tf.int64)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)), tf.float32))
        return outputs, loss, parts, correct

    def replica_train_step(images, labels):
        with tf.GradientTape() as tape:
            outputs, loss, parts, correct = forward(images, labels, True, strategy is not None)
            scaled = optimizer.scale_loss(loss)
        grads = gradients_for_adam(tape.gradient(scaled, variables), sparse_adam)
        # DCBH's direct center update comes before the optimizer step, as in the original.
        method.before_optimizer_step(model, outputs, labels)
        # Keras sums the replicas' gradients (each replica's loss is its share).
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return tf.stack([loss, *parts, correct, tf.cast(tf.shape(labels)[0], tf.float32)])

    def replica_group_step(images, labels):
        """Several optimisers (or one with its own objective / decay): one forward, every
        group's gradients from it (the forward's weights), then the updates in order."""
        distributed = strategy is not None
        replicas = (tf.distribute.get_replica_context().num_replicas_in_sync
                    if distributed else 1)
        with tf.GradientTape(persistent=len(groups) > 1) as tape:
            outputs, loss, parts, correct = forward(images, labels, True, distributed)
            scaled = [opt.scale_loss(_group_objective(group, loss, names, parts, distributed))
                      for group, opt in zip(groups, optimizers)]
        grads = []
        for group, opt, objective in zip(groups, optimizers, scaled):
            group_grads = gradients_for_adam(tape.gradient(objective, list(group.variables)),
                                             sparse_adam)
            grads.append(_with_coupled_decay(group, opt, group_grads, replicas))
        method.before_optimizer_step(model, outputs, labels)
        for group, opt, group_grads in zip(groups, optimizers, grads):
            pairs = [(g, v) for g, v in zip(group_grads, group.variables) if g is not None]
            if pairs:
                opt.apply_gradients(pairs)
        return tf.stack([loss, *parts, correct, tf.cast(tf.shape(labels)[0], tf.float32)])

    step = replica_train_step if plain else replica_group_step
    if strategy is None:
        train_step = tf.function(step, jit_compile=jit_compile, reduce_retracing=True)
    else:
        # One trace for every batch (the chunks' sizes unknown when tracing): replicas
        # traced with different sizes build different graphs whose collectives no
        # longer pair up.
        @tf.function(input_signature=list(batch_spec))
        def train_step(images, labels):
            per_replica = strategy.run(step, args=(images, labels))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    @tf.function(reduce_retracing=True)
    def test_step(images, labels):
        _, loss, parts, correct = forward(images, labels, False)
        return tf.stack([loss, *parts, correct])

    return train_step, test_step, names


@dataclass
class _EpochStats:
    loss: float
    parts: dict[str, float]
    accuracy: float
    images: int
    steps: int
    seconds: float


def _summarise(sums: np.ndarray | None, steps: int, images: int, names: list[str],
               seconds: float) -> _EpochStats:
    if sums is None:  # no batch at all
        sums = np.full(len(names) + 2, np.nan)
    means = sums[:-1] / max(steps, 1)
    return _EpochStats(loss=float(means[0]), parts=dict(zip(names, map(float, means[1:]))),
                       accuracy=float(sums[-1] / max(images, 1)), images=images, steps=steps,
                       seconds=seconds)


# ----------------------------------------------------------------------- the loop
class _Trainer:
    """State of one ``train`` call (kept small: the public API is :func:`train`)."""

    def __init__(self, method: HashingMethod, data: SplitData, config: TrainConfig,
                 strategy: tf.distribute.Strategy | None = None):
        self.method, self.data, self.config = method, data, config
        self.strategy = strategy
        self.out = sys.stdout  # where the lines a person reads go (self.say)
        self.tf_config = strategy_tf_config(strategy)  # None unless multi_worker
        self.chief = is_chief(self.tf_config)  # the one process that writes model_dir
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.model = method.build_model(data.num_classes)
            untracked = untracked_variables(self.model)
            if untracked:
                raise ValueError(
                    f"{method.name}: variables a checkpoint of the model would miss (sublayers "
                    f"kept in a list or tuple of a custom layer?): {', '.join(untracked[:5])}")
            if strategy is not None:  # global-batch statistics, as on one device
                synchronize_batch_norm(self.model)
            self.policy = keras.mixed_precision.global_policy().name
            self.groups = optimizer_groups(method, self.model)
            # One Adam per optimizer group (one for most methods); the first is
            # ``self.optimizer``, whose step count the run reports.
            self.optimizers = [make_optimizer(config, self.policy, list(g.variables))
                               for g in self.groups]
            self.optimizer = self.optimizers[0]
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        store = CheckpointStore if self.chief else WorkerCheckpointStore
        self.store = store(config.model_dir, model=self.model,
                           **optimizer_trackables(self.groups, self.optimizers), epoch=self.epoch)
        self.pipeline = ArrayPipeline(data.train_images, data.train_labels, config.batch_size,
                                      shuffle=config.shuffle, seed=config.seed)
        self.train_step, self.test_step, self.names = _make_steps(
            self.model, method, self.optimizers, config.jit_compile, config.sparse_adam,
            strategy, self.batch_spec())
        self.test_pipeline = ArrayPipeline(data.test_images, data.test_labels, config.batch_size)
        self.writer = (tf.summary.create_file_writer(os.path.join(config.model_dir, TENSORBOARD))
                       if self.chief else tf.summary.create_noop_writer())

    @property
    def optimizer_variables(self) -> list:
        """The variables of every optimiser (moments, step counts, learning rates)."""
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    def set_learning_rate(self, epoch_index: int) -> float:
        """Set every optimiser's rate for 0-based ``epoch_index`` (the method's schedule)."""
        rate = float(self.method.learning_rate(epoch_index, self.config.learning_rate))
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"{self.method.name}.learning_rate({epoch_index}) gave {rate}; "
                             "a learning rate must be a finite number > 0")
        for optimizer in self.optimizers:
            optimizer.learning_rate = rate
        return rate

    @property
    def staged(self) -> bool:
        """Whether the method trains in stages (records then carry each epoch's stage)."""
        return type(self.method).stage is not HashingMethod.stage

    def start_stage(self, epoch_index: int) -> int:
        """Enter the method's stage of 0-based ``epoch_index``; returns it."""
        stage = int(self.method.stage(epoch_index))
        self.method.start_stage(self.model, stage)
        return stage

    def batch_spec(self):
        """Element spec of the distributed batches (None on one device)."""
        if self.strategy is None:
            return None
        return distributed_epoch(self.strategy, self.pipeline, 0, max_batches=1).element_spec

    # ------------------------------------------------------------- one epoch
    def steps_per_epoch(self) -> int:
        steps = self.pipeline.steps_per_epoch()
        if self.strategy is not None:  # a last batch smaller than the replicas is skipped
            steps = distributed_steps(self.pipeline.num_examples, self.pipeline.batch_size,
                                      self.strategy.num_replicas_in_sync)
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        return steps

    def say(self, text: str) -> None:
        """A line a person reads (figures, not diagnostics): plain, on stdout."""
        self.out.write(text + "\n")
        self.out.flush()

    def epoch_progress(self, epoch: int) -> EpochProgress:
        every = self.config.log_every_steps
        return EpochProgress(epoch, self.config.epochs, self.steps_per_epoch(), stream=self.out,
                             every_steps=every, interactive=None if every else False)

    def train_epoch(self, epoch_index: int, last_good_epoch: int,
                    progress: EpochProgress | None = None) -> _EpochStats:
        """Train one epoch; raise NonFiniteLossError at the first non-finite loss."""
        total = self.steps_per_epoch()
        sums, images, steps = None, 0, 0
        start = time.perf_counter()
        pending = None

        def consume(item):
            nonlocal sums, images, steps
            step, values = item
            values = values.numpy().astype(np.float64)
            n, values = int(values[-1]), values[:-1]
            if not np.all(np.isfinite(values[:-1])):
                parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(self.names, values[1:-1]))
                kept = (f"the last good checkpoint (epoch {last_good_epoch}) is kept in "
                        f"{self.store.directory}" if last_good_epoch else
                        "no epoch had completed, so there is no checkpoint")
                raise NonFiniteLossError(
                    f"non-finite training loss at epoch {epoch_index + 1}, step {step + 1}/{total}"
                    f": loss {values[0]:.4g} ({parts}). Training stopped without saving this "
                    f"state; {kept}. Check the loss weights or lower the learning rate.",
                    epoch_index + 1, step + 1, last_good_epoch)
            sums = values if sums is None else sums + values
            images += n
            steps += 1
            if progress is not None:
                progress.update(steps, sums[0] / steps, images)

        batches = (self.pipeline.epoch(epoch_index) if self.strategy is None else
                   distributed_epoch(self.strategy, self.pipeline, epoch_index, total))
        for step, (batch_images, batch_labels) in enumerate(batches):
            if step >= total:
                break
            interrupts.check()  # a stop request ends the epoch here, before its state is saved
            values = self.train_step(batch_images, batch_labels)
            # Read the previous step's figures only now, so the device queue never drains.
            if pending is not None:
                consume(pending)
            pending = (step, values)
        if pending is not None:
            consume(pending)
        return _summarise(sums, steps, images, self.names, time.perf_counter() - start)

    def check_state(self, epoch: int, last_good_epoch: int) -> None:
        """Refuse to save a state whose variables hold NaN or inf.

        The loss is finite at every step (checked in :meth:`train_epoch`), yet the
        last update of an epoch, a batch-norm statistic or a center can still
        overflow; such a state is never saved, so never evaluated or exported.
        """
        bad = non_finite_variables(list(self.model.variables) + self.optimizer_variables)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            kept = (f"the last good checkpoint (epoch {last_good_epoch}) is kept in "
                    f"{self.store.directory}" if last_good_epoch else
                    "no epoch had completed, so there is no checkpoint")
            raise NonFiniteStateError(
                f"non-finite values after epoch {epoch} in {shown}. Training stopped without "
                f"saving this state; {kept}. Lower the learning rate or the loss weights.",
                epoch, self.steps_per_epoch(), last_good_epoch)

    def test_epoch(self) -> _EpochStats:
        """Loss and accuracy of the live weights on the test split (inference mode)."""
        sums, images, steps = None, 0, 0
        start = time.perf_counter()
        for batch_images, batch_labels in self.test_pipeline.epoch(0):
            interrupts.check()
            values = self.test_step(batch_images, batch_labels).numpy().astype(np.float64)
            sums = values if sums is None else sums + values
            images += int(batch_labels.shape[0])
            steps += 1
        return _summarise(sums, steps, images, self.names, time.perf_counter() - start)

    # ------------------------------------------------------------- evaluation
    @contextlib.contextmanager
    def weights_of(self, slot: str) -> Iterator[None]:
        """Temporarily load a slot's model weights; the live weights come back after.

        The live weights always equal ``last`` when this is called (right after a save
        or a restore), so ``last``'s own state needs no swap.
        """
        record, last = self.store.info(slot), self.store.info("last")
        if last is not None and record["dir"] == last["dir"]:
            yield
            return
        live = [v.numpy() for v in self.model.variables]
        try:
            self.store.restore_model(slot, self.model)
            yield
        finally:
            for variable, value in zip(self.model.variables, live):
                variable.assign(value)

    @property
    def selection_split(self) -> str:
        """The query split that selects ``best_map``: validation when the data has one,
        else the test split (the original's way, which flatters every method)."""
        return "validation" if self.data.has_validation else "test"

    def metrics_of(self, slot: str, current_epoch: int,
                   queries: str | None = None) -> dict[str, Any]:
        """Retrieval metrics of a slot's state, computed once per state, query split and
        protocol (``queries``: default the selection split)."""
        queries = queries or self.selection_split
        key = "metrics" if queries == self.selection_split else f"{queries}_metrics"
        record = self.store.info(slot)
        settings = {**self.config.eval_settings(), "queries": queries}
        cached = record.get(key)
        if cached and all({**EVAL_SETTINGS_BEFORE_THEY_EXISTED, **cached}.get(k) == v
                          for k, v in settings.items()):
            return cached
        start = time.perf_counter()
        with self.weights_of(slot):
            figures = evaluate_retrieval(self.model, self.method, self.data,
                                         batch_size=self.config.eval_batch_size, **settings)
        metrics = dict(figures, **settings, evaluated_at_epoch=current_epoch,
                       seconds=round(time.perf_counter() - start, 3))
        crash_point("eval:computed")
        self.store.annotate_state(record["dir"], **{key: metrics})
        crash_point("eval:annotated")
        split = "" if queries == "test" and not self.data.has_validation else f"{queries} "
        self.say(f"retrieval of {slot} (epoch {record['epoch']}): {split}mAP {figures['map']:.4f}, "
                 f"precision@{self.config.top_k} {figures['precision_at_k']:.4f}, "
                 f"precision/recall within radius {self.config.radius} "
                 f"{figures['precision_within_radius']:.4f} / "
                 f"{figures['recall_within_radius']:.4f} ({self.config.hamming} Hamming, "
                 f"{self.config.ties} ties) in {metrics['seconds']:.1f} s")
        return metrics

    def consider_for_best_map(self, slot: str, current_epoch: int) -> dict[str, Any]:
        """Evaluate ``slot``; make ``best_map`` name its state if its mAP is the best so far."""
        metrics = self.metrics_of(slot, current_epoch)
        if self.store.has("best_map"):
            best = self.metrics_of("best_map", current_epoch)
            if not metrics["map"] > best["map"]:
                return metrics
        self.store.point("best_map", slot)
        return metrics

    def evaluation_due(self, epoch: int) -> bool:
        """Whether the periodic evaluation follows ``epoch`` (the final one is separate)."""
        every = self.config.eval_every
        return bool(every) and epoch % every == 0 and 0 < epoch < self.config.epochs

    def periodic_evaluation(self, epoch: int) -> None:
        """Evaluate ``best_loss`` after ``epoch``; idempotent (figures are cached per state),
        so a resumed run simply redoes the evaluation a kill interrupted."""
        metrics = self.consider_for_best_map("best_loss", epoch)
        self.summary_scalars(epoch, {f"retrieval_best_loss/{k}": metrics[k]
                                     for k in METRIC_KEYS})

    def summary_scalars(self, epoch: int, values: dict[str, float]) -> None:
        with self.writer.as_default():
            for tag, value in values.items():
                write_scalar(tag, value, epoch)
        self.writer.flush()

    # ------------------------------------------------------------- whole run
    def run(self) -> dict[str, Any]:
        cfg = self.config
        wall_start = time.perf_counter()
        start_epoch = 0
        if self.store.has("last"):
            record = self.store.restore("last")
            start_epoch = int(self.epoch.numpy())
            # The checkpoint holds the optimizers' learning rate: apply the one asked for
            # (and each epoch's own, set again at its start).
            self.set_learning_rate(start_epoch)
            self.say(f"resuming {cfg.model_dir} from epoch {start_epoch} "
                     f"(optimizer step {int(self.optimizer.iterations.numpy())})")
            if record["epoch"] != start_epoch:
                raise CheckpointError(f"{self.store.directory}: index says epoch "
                                      f"{record['epoch']}, checkpoint says {start_epoch}")
            if self.chief:
                restore_history_line(cfg.model_dir, record)
        self.check_workers_agree(start_epoch)
        if self.chief and start_epoch and self.evaluation_due(start_epoch):
            self.periodic_evaluation(start_epoch)  # a kill may have cut this evaluation short
        best_loss = self.store.info("best_loss")
        best_loss_value = best_loss["loss"] if best_loss else math.inf
        best_loss_stage = best_loss.get("stage", 0) if best_loss else None
        last = self.store.info("last") or {}
        train_seconds = float(last.get("train_seconds", 0.0))
        train_images = int(last.get("train_images", 0))
        session_seconds, session_images = 0.0, 0

        for epoch_index in range(start_epoch, cfg.epochs):
            interrupts.check()
            epoch = epoch_index + 1
            epoch_start = time.perf_counter()
            progress = self.epoch_progress(epoch)
            learning_rate = self.set_learning_rate(epoch_index)
            stage = self.start_stage(epoch_index)
            if stage != best_loss_stage:  # another objective: its losses start afresh
                best_loss_value = math.inf
            stats = self.train_epoch(epoch_index, last_good_epoch=epoch_index, progress=progress)
            test = self.test_epoch()
            train_seconds += stats.seconds
            train_images += stats.images
            session_seconds += stats.seconds
            session_images += stats.images
            self.check_state(epoch, last_good_epoch=epoch_index)
            self.epoch.assign(epoch)
            improved = stats.loss < best_loss_value
            slots = ["last", "best_loss"] if improved else ["last"]
            if improved:
                best_loss_value, best_loss_stage = stats.loss, stage
            staged = {"stage": stage} if self.staged else {}
            images_per_second = stats.images / max(stats.seconds, 1e-9)
            history = {
                "epoch": epoch, "loss": stats.loss, "loss_parts": stats.parts,
                "accuracy": stats.accuracy, "test_loss": test.loss, "test_accuracy": test.accuracy,
                "test_loss_parts": test.parts, "seconds": stats.seconds,
                "images_per_second": images_per_second, "best_loss": improved,
                "learning_rate": learning_rate, **staged}
            self.store.save(slots, {
                "epoch": epoch, "loss": stats.loss, "loss_parts": stats.parts,
                "accuracy": stats.accuracy, "test_loss": test.loss, "test_accuracy": test.accuracy,
                "train_seconds": train_seconds, "train_images": train_images,
                "optimizer_iterations": int(self.optimizer.iterations.numpy()),
                "history": history, **staged})
            crash_point("train:saved")
            if self.chief:
                append_history_line(cfg.model_dir, history)
            parts = ", ".join(f"{k} {v:.4f}" for k, v in stats.parts.items())
            progress.finish(
                f"epoch {epoch}/{cfg.epochs} | train loss {stats.loss:.4f} ({parts}) acc "
                f"{stats.accuracy:.4f} | test loss {test.loss:.4f} acc {test.accuracy:.4f} | "
                f"{time.perf_counter() - epoch_start:.1f} s, {images_per_second:.0f} img/s"
                + (" | new lowest loss" if improved else ""))
            scalars = {"train/loss": stats.loss, "train/accuracy": stats.accuracy,
                       "test/loss": test.loss, "test/accuracy": test.accuracy,
                       "perf/images_per_second": images_per_second}
            scalars.update({f"train/{k}": v for k, v in stats.parts.items()})
            scalars.update({f"test/{k}": v for k, v in test.parts.items()})
            self.summary_scalars(epoch, scalars)
            if self.chief and self.evaluation_due(epoch):
                self.periodic_evaluation(epoch)

        final_epoch = int(self.epoch.numpy())
        if not self.chief:  # the chief evaluates and reports
            return {"worker": self.tf_config["task"], "epochs_completed": final_epoch,
                    "model_dir": cfg.model_dir}
        for slot in ("best_loss", "last"):
            metrics = self.consider_for_best_map(slot, final_epoch)
            self.summary_scalars(final_epoch, {f"retrieval_{slot}/{k}": metrics[k]
                                               for k in METRIC_KEYS})
        if self.data.has_validation:  # the chosen states, scored once on the test split
            for slot in REPORTED_SLOTS:
                self.metrics_of(slot, final_epoch, queries="test")
        report = self.report(train_seconds, train_images, session_seconds, session_images,
                             time.perf_counter() - wall_start)
        crash_point("train:report")
        write_json_atomic(os.path.join(cfg.model_dir, METRICS), report)
        for slot in REPORTED_SLOTS:
            r = report[slot]
            logging.debug("%-9s epoch %4d | mAP %.4f | precision@%d %.4f | radius %d: precision "
                         "%.4f recall %.4f", slot, r["epoch"], r["map"], cfg.top_k,
                         r["precision_at_k"], cfg.radius, r["precision_within_radius"],
                         r["recall_within_radius"])
        return report

    def check_workers_agree(self, start_epoch: int) -> None:
        """Refuse to train when the workers would resume from different epochs.

        Every worker restores the chief's checkpoints, so they must all see one run
        folder; a worker on another machine with its own empty folder would start
        from scratch and the collectives would never pair up.
        """
        if self.tf_config is None:
            return
        epochs = replica_values(self.strategy, start_epoch)
        if len(set(epochs)) > 1:
            raise DistributionError(
                f"the workers would resume from different epochs ({sorted(set(epochs))}): "
                f"every worker must see the same --model_dir ({self.config.model_dir}), one "
                "folder shared by all machines")

    def report(self, train_seconds: float, train_images: int, session_seconds: float,
               session_images: int, wall_seconds: float) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        entries = {}
        validation = self.data.has_validation
        for slot in REPORTED_SLOTS:
            record = self.store.info(slot)
            metrics = record["test_metrics" if validation else "metrics"]
            entries[slot] = {"epoch": record["epoch"], "loss": record["loss"],
                             "test_accuracy": record.get("test_accuracy"),
                             **{k: metrics[k] for k in METRIC_KEYS},
                             **self.config.eval_settings()}
            if validation:
                entries[slot]["validation"] = {k: record["metrics"][k] for k in METRIC_KEYS}
        protocol = {"queries": "test split", "database": "train split",
                    "relevant": "same label", **self.config.eval_settings()}
        if validation:
            protocol.update(database="train split without the validation rows",
                            selection="validation split", validation=self.data.description.get(
                                "validation"))
        else:
            protocol["selection"] = "test split (no validation split)"
        return {
            **entries,
            "epochs_completed": int(self.epoch.numpy()),
            "protocol": protocol,
            "method": self.method.config(),
            "dataset": self.data.description.get("dataset"),
            "num_classes": int(self.data.num_classes),
            "train_config": dataclasses.asdict(self.config),
            "precision_policy": self.policy,
            "wall_time_s": wall_seconds,
            "train_seconds_total": train_seconds,
            "train_images_total": train_images,
            "images_per_second": train_images / train_seconds if train_seconds else None,
            "session_train_seconds": session_seconds,
            "session_images_per_second": (session_images / session_seconds
                                          if session_seconds else None),
        }


def train(method: HashingMethod, data: SplitData, config: TrainConfig) -> dict[str, Any]:
    """Train ``method`` on ``data`` into ``config.model_dir``, resuming if a run is there.

    Each epoch saves the ``last`` checkpoint (and ``best_loss`` when its mean train loss
    is the lowest so far); every ``eval_every`` epochs and at the end the ``best_loss``
    state is evaluated (without rolling training back to it) and ``best_map`` names the
    best-mAP state evaluated. Writes ``run_config.json`` at the start and
    ``metrics.json`` at the end; a run whose epochs are all done is only (re-)evaluated.

    Returns:
        The content of ``metrics.json``: per slot (last, best_loss, best_map) the
        epoch and retrieval figures, plus run settings, times and throughput. In a
        multi_worker run the workers other than the chief write nothing and return
        ``{"worker": their TF_CONFIG task, "epochs_completed": n, "model_dir": ...}``.

    Raises:
        ValueError: a bad setting (DistributionError: a distribution that cannot work).
        RunConfigMismatchError: ``model_dir`` holds a run of another model or data set.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
    """
    config.validate()
    # First: a multi-worker strategy must exist before TensorFlow runs any op.
    strategy = make_strategy(config.distribution) if config.distribution != "default" else None
    chief = is_chief(strategy_tf_config(strategy))  # the others read model_dir, never write
    if chief:
        os.makedirs(config.model_dir, exist_ok=True)
    with run_lock(config.model_dir) if chief else contextlib.nullcontext():
        if chief:
            remove_stale_json_temps(config.model_dir)
        run_config = make_run_config(method, data, config)
        run_config["replicas"] = strategy.num_replicas_in_sync if strategy is not None else 1
        path = os.path.join(config.model_dir, RUN_CONFIG)
        last = read_index(config.model_dir)["slots"].get("last")
        if last is not None:
            old = read_run_config_for_resume(path, config.model_dir)
            if isinstance(old.get("method"), dict):  # settings the run predates: their value then
                old["method"] = type(method).complete_config(old["method"])
            check_resumable(old, run_config, config.model_dir)
            record_setting_changes(old, run_config, int(last["epoch"]))
            if old.get("created"):
                run_config["created"] = old["created"]
        run_config.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        run_config["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if chief:
            write_json_atomic(path, run_config)

        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision))
        try:
            with interrupts.deferred():  # SIGINT/SIGTERM stop between steps, never inside TF
                return _Trainer(method, data, config, strategy).run()
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
