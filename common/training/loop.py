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

The loop only decides; its parts live beside it: the settings (``config``), the run's
config file (common.runs.run_config), the optimisers (``optimizers``), the step
(``steps``), the epoch (``epoch``), the slots' evaluation and ``best_map`` (``selection``),
what is printed and written (``reporting``).

Differences from the original, on purpose:

* Evaluating the lowest-loss state does NOT roll training back to it. The original
  restored that checkpoint into its live session, so training silently continued
  from an older state after every evaluation; here the live weights are set aside,
  the ``best_loss`` weights evaluated, and the live weights put back.
* The original also saved its checkpoint at epoch 5 whatever the loss; that state then
  stood in for "lowest loss" though it was not. ``best_loss`` here only ever holds the
  lowest-loss state (``last`` covers resuming), of the current stage for a staged method.
* ``best_map`` is the evaluated state with the highest mAP on the selection split (a
  validation split when the data has one); at the end of training the final (``last``)
  state is evaluated too and is a candidate as well.
* Mean losses are means over the epoch's batches (each batch's cost, as minimised).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any

import keras
import tensorflow as tf

from common.data.pipeline import ArrayPipeline
from common.io import interrupts
from common.io.atomic import remove_stale_json_temps, write_json_atomic
from common.io.faults import crash_point
from common.io.locks import run_lock
from common.methods.base import HashingMethod
from common.runs import run_config as run_config_file
from common.runs.checkpoints.layout import CheckpointError
from common.runs.checkpoints.store import (CheckpointStore, WorkerCheckpointStore,
                                           untracked_variables)
from common.runs.history import append_history_line
from common.training import epoch as epochs
from common.training import reporting
from common.training.config import TrainConfig
from common.models.finite import non_finite_variables
from common.training.data import SplitData
from common.training.evaluate import compute_codes
from common.training.distribution import (check_workers_agree, distributed_epoch,
                                          distributed_steps, is_chief, make_strategy,
                                          strategy_tf_config, synchronize_batch_norm)
from common.training.optimizers import (make_optimizer, optimizer_groups, optimizer_trackables,
                                        precision_policy)
from common.io.progress import Progress, epoch_progress
from common.training.selection import SlotSelection
from common.training.steps import make_steps


PROBE_IMAGES = 64  # training images whose codes each new state must give finite


class _Trainer:
    """State of one ``train`` call (the public API is :func:`train`)."""

    def __init__(self, method: HashingMethod, data: SplitData, config: TrainConfig,
                 strategy: tf.distribute.Strategy | None = None):
        self.method, self.data, self.config = method, data, config
        self.distribution = strategy  # None: one device (TensorFlow's default strategy)
        self.out = sys.stdout  # where the lines a person reads go (self.say)
        self.tf_config = strategy_tf_config(strategy)  # None unless multi_worker
        self.chief = is_chief(self.tf_config)  # the one process that writes model_dir
        with (strategy or tf.distribute.get_strategy()).scope():
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
        self.pipeline = ArrayPipeline(*data.training_rows(), config.batch_size,
                                      shuffle=config.shuffle, seed=config.seed)
        self.steps = make_steps(self.model, method, self.optimizers, config.jit_compile,
                                config.sparse_adam, strategy, self.batch_spec())
        self.test_pipeline = ArrayPipeline(data.test_images, data.test_labels, config.batch_size)
        self.writer = (tf.summary.create_file_writer(os.path.join(config.model_dir,
                                                                  reporting.TENSORBOARD))
                       if self.chief else tf.summary.create_noop_writer())
        self.selection = SlotSelection(self.store, self.model, method, data, config, self.say)

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
        if self.distribution is None:
            return None
        return distributed_epoch(self.distribution, self.pipeline, 0, max_batches=1).element_spec

    def steps_per_epoch(self) -> int:
        steps = self.pipeline.steps_per_epoch()
        if self.distribution is not None:  # a last batch smaller than the replicas is skipped
            steps = distributed_steps(self.pipeline.num_examples, self.pipeline.batch_size,
                                      self.distribution.num_replicas_in_sync)
        if self.config.max_steps_per_epoch:
            steps = min(steps, self.config.max_steps_per_epoch)
        return steps

    def say(self, text: str) -> None:
        """A line a person reads (figures, not diagnostics): plain, on stdout."""
        self.out.write(text + "\n")
        self.out.flush()

    def train_epoch(self, epoch_index: int, progress: Progress) -> epochs.EpochStats:
        total = self.steps_per_epoch()
        batches = (self.pipeline.epoch(epoch_index) if self.distribution is None else
                   distributed_epoch(self.distribution, self.pipeline, epoch_index, total))
        stats = epochs.train_epoch(self.steps.train_step, batches, total, epoch_index,
                                   epoch_index, self.store.directory, progress)
        epochs.check_state(list(self.model.variables) + self.optimizer_variables,
                           epoch_index + 1, total, epoch_index, self.store.directory)
        return stats

    def probe_codes(self):
        """Relaxed codes of the first training images, in inference mode (a finite state
        must give finite codes: :func:`common.training.epoch.check_outputs`)."""
        return compute_codes(self.model, self.method, self.data.train_images[:PROBE_IMAGES],
                             self.config.eval_batch_size, self.config.eval_batch_norm)

    def resume(self) -> int:
        """Restore ``last`` if there is one; returns the epoch to continue from."""
        if not self.store.has("last"):
            return 0
        record = self.store.restore("last")
        start_epoch = int(self.epoch.numpy())
        # The checkpoint holds the optimizers' learning rate: apply the one asked for
        # (and each epoch's own, set again at its start).
        self.set_learning_rate(start_epoch)
        self.say(f"resuming {self.config.model_dir} from epoch {start_epoch} "
                 f"(optimizer step {int(self.optimizer.iterations.numpy())})")
        if record["epoch"] != start_epoch:
            raise CheckpointError(f"{self.store.directory}: index says epoch "
                                  f"{record['epoch']}, checkpoint says {start_epoch}")
        bad = non_finite_variables(list(self.model.variables) + self.optimizer_variables)
        if bad:  # never trained on, never called "the last good checkpoint"
            raise CheckpointError(f"{self.store.directory}: the last state (epoch {start_epoch}) "
                                  f"holds non-finite values ({', '.join(bad[:3])}); it cannot "
                                  "be resumed. Start a new --model_dir, or export an earlier "
                                  "slot (--checkpoint best_map)")
        if self.chief:
            reporting.restore_history_line(self.config.model_dir, record)
        return start_epoch

    def run(self, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train (resuming if a run is there), evaluate, report. ``run_config``: the run
        config to write (the chief's; None: a worker, or a caller that wrote it) once
        the resume can no longer be refused, before the first epoch of this session."""
        cfg, wall_start = self.config, time.perf_counter()
        start_epoch = self.resume()
        check_workers_agree(self.distribution, self.tf_config, start_epoch, cfg.model_dir)
        if run_config is not None and self.chief:  # a refused resume leaves the file as it was
            run_config_file.write_run_config(cfg.model_dir, run_config)
        if self.chief and start_epoch and self.selection.due(start_epoch):
            self.evaluate(start_epoch)  # a kill may have cut this evaluation short
        best_loss = self.store.info("best_loss")
        best_loss_value = best_loss["loss"] if best_loss else math.inf
        best_loss_stage = best_loss.get("stage", 0) if best_loss else None
        last = self.store.info("last") or {}
        totals = reporting.Totals(float(last.get("train_seconds", 0.0)),
                                  int(last.get("train_images", 0)))
        for epoch_index in range(start_epoch, cfg.epochs):
            interrupts.check()
            epoch, epoch_start = epoch_index + 1, time.perf_counter()
            progress = epoch_progress(epoch, cfg.epochs, self.steps_per_epoch(), self.out,
                                      cfg.log_every_steps)
            learning_rate = self.set_learning_rate(epoch_index)
            stage = self.start_stage(epoch_index)
            if stage != best_loss_stage:  # another objective: its losses start afresh
                best_loss_value = math.inf
            stats = self.train_epoch(epoch_index, progress)
            test = epochs.test_epoch(self.steps.test_step, self.test_pipeline.epoch(0))
            epochs.check_outputs(test, self.probe_codes(), epoch, self.steps_per_epoch(),
                                 epoch_index, self.store.directory)
            totals.add(stats)
            self.epoch.assign(epoch)
            improved = stats.loss < best_loss_value
            if improved:
                best_loss_value, best_loss_stage = stats.loss, stage
            history = reporting.history_line(epoch, stats, test, improved, learning_rate,
                                             {"stage": stage} if self.staged else {})
            self.store.save(["last", "best_loss"] if improved else ["last"], reporting.state_record(
                history, totals.train_seconds, totals.train_images,
                int(self.optimizer.iterations.numpy())))
            crash_point("train:saved")
            if self.chief:
                append_history_line(cfg.model_dir, history)
            progress.finish(reporting.epoch_line(epoch, cfg.epochs, stats, test,
                                                 time.perf_counter() - epoch_start, improved))
            reporting.write_scalars(self.writer, epoch, reporting.epoch_scalars(
                stats, test, history["images_per_second"]))
            if self.chief and self.selection.due(epoch):
                self.evaluate(epoch)
        return self.finish(totals, time.perf_counter() - wall_start)

    def evaluate(self, epoch: int) -> None:
        """The periodic evaluation after ``epoch`` (``best_loss``, a ``best_map`` candidate)."""
        metrics = self.selection.periodic(epoch)
        reporting.write_scalars(self.writer, epoch,
                                reporting.retrieval_scalars("best_loss", metrics))

    def finish(self, totals: reporting.Totals, wall_seconds: float) -> dict[str, Any]:
        """The final evaluation and ``metrics.json`` (the chief's; a worker only says so)."""
        final_epoch = int(self.epoch.numpy())
        if not self.chief:
            assert self.tf_config is not None  # only a multi-worker cluster has workers
            return {"worker": self.tf_config["task"], "epochs_completed": final_epoch,
                    "model_dir": self.config.model_dir}
        for slot, metrics in self.selection.final(final_epoch).items():
            reporting.write_scalars(self.writer, final_epoch,
                                    reporting.retrieval_scalars(slot, metrics))
        report = reporting.report(self.store, self.data, self.config, self.method.config(),
                                  self.policy, final_epoch, totals, wall_seconds)
        crash_point("train:report")
        write_json_atomic(os.path.join(self.config.model_dir, reporting.METRICS), report)
        return report


def train(method: HashingMethod, data: SplitData, config: TrainConfig) -> dict[str, Any]:
    """Train ``method`` on ``data`` into ``config.model_dir``, resuming if a run is there.

    Each epoch saves the ``last`` checkpoint (and ``best_loss`` when its mean train loss
    is the lowest so far); every ``eval_every`` epochs and at the end the ``best_loss``
    state is evaluated (without rolling training back to it) and ``best_map`` names the
    best-mAP state evaluated. Writes ``run_config.json`` at the start (after a resume has
    restored the last state: a refused resume leaves it as it was) and ``metrics.json``
    at the end; a run whose epochs are all done is only (re-)evaluated.

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
        # Checked now (a mismatch stops before any model is built); written by the chief
        # only once the resume has restored ``last`` (_Trainer.run).
        new_run_config = run_config_file.start(
            config.model_dir, method.config(), type(method).complete_config, data, config,
            precision_policy(config.mixed_precision),
            strategy.num_replicas_in_sync if strategy is not None else 1, write=False)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision))
        try:
            with interrupts.deferred():  # SIGINT/SIGTERM stop between steps, never inside TF
                return _Trainer(method, data, config, strategy).run(
                    new_run_config if chief else None)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
