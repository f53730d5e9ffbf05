"""Train G, D and C together: the step (a tf.function), the epoch loop, checkpoints, resume.

Why resumable like every other run of the project: a CPU run of the real data sets
lasts hours. Each epoch ends with a checkpoint (G, D, C, their three Adam optimisers,
the epoch counter) written by ``tf.train.CheckpointManager`` under a new name
(``ckpt-<epoch>``), its state file replaced atomically afterwards, the previous
checkpoint kept: a kill mid-write leaves the last good one in place. Re-running with
the same ``model_dir`` continues after the last saved epoch; the randomness of an epoch
(order, partners, noise) is drawn from ``(seed, epoch)``, so a resumed run sees the
same batches as an uninterrupted one.

One step (README, "Design"): G makes two variants of each source x (noises z1, z2);
D judges real pairs (x, partner) against fake pairs (x, G(x, z)) with the hinge loss;
C learns identities from real images; G minimises the hinge loss, the identity
cross-entropy of C on its variants, and the mode-seeking term. Per batch: one D step
(G fixed), then one G step against the updated D (alternating, the usual GAN schedule;
with simultaneous gradients G outran D, whose loss stayed at 2, chance level); C takes
its step from the real half of the G step's forward pass.
"""

from __future__ import annotations

from common.errors import WorkFailedError
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from common.io import json_files
from common.io.atomic import write_json_atomic
from common.runs.history import append_history_line
from common.runs.run_config import write_config_file
from common.io.locks import run_lock
from common.io.progress import epoch_progress
from dfh_tf.gan import losses
from dfh_tf.gan.data import GanData
from dfh_tf.gan.networks import build_discriminator, build_generator, build_identity_classifier
from dfh_tf.gan.pairs import partner_images, sample_partners
from dfh_tf.gan.run_folder import (CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, PENDING_HISTORY,
                                   RUN_KIND, GanRunError, quiet_unrestored_warnings,
                                   read_history, read_run_config)
from dfh_tf.gan.sampling import draw_noise

CONFIG_FORMAT = 1
CHECKPOINTS_KEPT = 2
# Settings that change the networks (and the checkpoint layout): a resume must match them.
MODEL_SETTINGS = ("noise_dim", "width")
# Facts of the data that the networks depend on; "validation" (the held-out rows' fraction,
# seed, count): a resume with another split would train on faces the first part held out.
# The train folder and its rows' digest are compared too (_train_data_differences).
MODEL_DATA = ("dataset", "num_classes", "train_images", "validation")


@dataclass
class GanConfig:
    """The settings of a GAN run (``config.json`` records them).

    Attributes:
        epochs: total epochs (a resumed run continues up to this many).
        batch_size: source images per step (G makes two variants of each).
        seed: weights and every epoch's order, partners and noise.
        noise_dim: length of z.
        width: channel multiplier of G, D and C.
        identity_weight: weight of C's cross-entropy on G's variants in G's loss.
        mode_seeking_weight: weight of the mode-seeking term in G's loss.
        learning_rate, beta_1, beta_2: Adam's, for all three networks.
        max_steps_per_epoch: cut epochs short (smoke runs; None: whole epochs).
        log_every_steps: a progress line every N steps when output is not a terminal.
    """

    epochs: int = 12
    batch_size: int = 64
    seed: int = 0
    noise_dim: int = 64
    width: float = 1.0
    identity_weight: float = 0.1
    mode_seeking_weight: float = 0.1
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    max_steps_per_epoch: int | None = None
    log_every_steps: int = 50

    def validate(self) -> None:
        """Raise ValueError for settings no run can use."""
        for name in ("epochs", "batch_size", "noise_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("width", "learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        for name in ("identity_weight", "mode_seeking_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError("max_steps_per_epoch must be >= 1")


class GanNonFiniteError(WorkFailedError, FloatingPointError):
    """A loss or a weight became NaN or infinite; that state was not saved."""

    def __init__(self, message: str, epoch: int, step: int, last_good_epoch: int):
        super().__init__(message)
        self.epoch, self.step, self.last_good_epoch = epoch, step, last_good_epoch


@dataclass
class GanModels:
    """The three networks, their optimisers and the epoch counter (what a checkpoint holds)."""

    generator: keras.Model
    discriminator: keras.Model
    classifier: keras.Model
    g_optimizer: keras.optimizers.Optimizer
    d_optimizer: keras.optimizers.Optimizer
    c_optimizer: keras.optimizers.Optimizer
    epoch: tf.Variable

    def checkpoint(self) -> tf.train.Checkpoint:
        """The tf.train.Checkpoint of everything training needs to continue."""
        return tf.train.Checkpoint(
            generator=self.generator, discriminator=self.discriminator,
            classifier=self.classifier, g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer, c_optimizer=self.c_optimizer, epoch=self.epoch)


def _adam(config: GanConfig, variables: list) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1,
                                      beta_2=config.beta_2)
    optimizer.build(variables)  # now, so that a checkpoint restores the moments
    return optimizer


def build_models(num_classes: int, config: GanConfig) -> GanModels:
    """G, D, C and their Adam optimisers, seeded with ``config.seed``.

    Args:
        num_classes: identities of C.
        config: the run's settings (noise_dim, width, Adam's, seed).
    """
    keras.utils.set_random_seed(config.seed)
    generator = build_generator(config.noise_dim, config.width)
    discriminator = build_discriminator(config.width)
    classifier = build_identity_classifier(num_classes, config.width)
    return GanModels(
        generator, discriminator, classifier,
        _adam(config, generator.trainable_variables),
        _adam(config, discriminator.trainable_variables),
        _adam(config, classifier.trainable_variables),
        tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))


METRICS = ("d_loss", "g_loss", "g_adversarial", "identity_ce", "mode_seeking",
           "classifier_ce", "classifier_accuracy", "diversity", "real_logit", "fake_logit")


def make_train_step(models: GanModels, config: GanConfig):
    """The compiled training step ``step(x, partner, y, z1, z2) -> {metric: scalar}``.

    Args:
        models: the networks and optimisers (updated in place).
        config: identity_weight and mode_seeking_weight.

    The metrics are :data:`METRICS`: the three losses and their parts, C's accuracy on
    the real batch, ``diversity`` = mean|G(x, z1) - G(x, z2)| in [-1, 1] units, and
    D's mean logits on real and fake pairs.
    """
    g, d, c = models.generator, models.discriminator, models.classifier
    identity_weight = float(config.identity_weight)
    mode_seeking_weight = float(config.mode_seeking_weight)
    image = tf.TensorSpec((None, 32, 32, 3), tf.float32)
    noise = tf.TensorSpec((None, config.noise_dim), tf.float32)

    def update(tape, loss, model, optimizer) -> None:
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function(input_signature=[image, image, tf.TensorSpec((None,), tf.int64), noise, noise])
    def step(x, partner, y, z1, z2):
        b = tf.shape(x)[0]
        xx = tf.concat([x, x], 0)
        zz = tf.concat([z1, z2], 0)
        # D step: real pairs (x, partner) against fake pairs (x, G(x, z1)), G fixed.
        fake_d = tf.stop_gradient(g([x, z1], training=True))
        with tf.GradientTape() as d_tape:
            pairs = tf.concat([tf.concat([x, partner], -1), tf.concat([x, fake_d], -1)], 0)
            logits = d(pairs, training=True)  # training: one power iteration, weights normalised
            real_logits, fake_logits_d = logits[:b], logits[b:]
            d_loss = losses.d_hinge_loss(real_logits, fake_logits_d)
        update(d_tape, d_loss, d, models.d_optimizer)
        # G step against the updated D; C learns from the real half of the same call.
        with tf.GradientTape() as g_tape, tf.GradientTape() as c_tape:
            fakes = g([xx, zz], training=True)
            fake1, fake2 = fakes[:b], fakes[b:]
            fake_logits = d(tf.concat([xx, fakes], -1), training=False)
            g_adversarial = losses.g_hinge_loss(fake_logits)
            class_logits = c(tf.concat([x, fakes], 0), training=True)
            classifier_ce = losses.identity_cross_entropy(y, class_logits[:b])
            identity_ce = losses.identity_cross_entropy(tf.concat([y, y], 0), class_logits[b:])
            mode_seeking = losses.mode_seeking_term(fake1, fake2, z1, z2)
            g_loss = (g_adversarial + identity_weight * identity_ce
                      + mode_seeking_weight * mode_seeking)
        update(c_tape, classifier_ce, c, models.c_optimizer)
        update(g_tape, g_loss, g, models.g_optimizer)
        accuracy = tf.reduce_mean(tf.cast(
            tf.equal(tf.argmax(class_logits[:b], -1, output_type=tf.int64), y), tf.float32))
        return {"d_loss": d_loss, "g_loss": g_loss, "g_adversarial": g_adversarial,
                "identity_ce": identity_ce, "mode_seeking": mode_seeking,
                "classifier_ce": classifier_ce, "classifier_accuracy": accuracy,
                "diversity": losses.image_distance(fake1, fake2),
                "real_logit": tf.reduce_mean(real_logits),
                "fake_logit": tf.reduce_mean(fake_logits_d)}

    return step


@dataclass
class EpochBatches:
    """One epoch's randomness, drawn from ``(seed, epoch)``: order, partners, two noises."""

    order: np.ndarray
    partners: np.ndarray
    flip: np.ndarray
    z1: np.ndarray
    z2: np.ndarray


def epoch_batches(labels: np.ndarray, noise_dim: int, seed: int, epoch: int) -> EpochBatches:
    """The order, partners and noises of ``epoch`` (the same on every resume)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(labels)
    order = rng.permutation(n)
    partners, flip = sample_partners(labels, rng)
    return EpochBatches(order, partners, flip, draw_noise(rng, n, noise_dim),
                        draw_noise(rng, n, noise_dim))


def make_run_config(data: GanData, config: GanConfig) -> dict[str, Any]:
    """What ``config.json`` records."""
    return json.loads(json.dumps({
        "kind": RUN_KIND, "format": CONFIG_FORMAT, "settings": dataclasses.asdict(config),
        "num_classes": data.num_classes, "data": data.description,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }))


def _train_data_differences(old_d: dict[str, Any], new_d: dict[str, Any]) -> list[str]:
    """Another train folder, or other rows in it (each compared where the old run recorded
    it: a run made before the digest resumes as before)."""
    old_dir, new_dir = old_d.get("train_dir"), new_d.get("train_dir")
    if isinstance(old_dir, str) and isinstance(new_dir, str) and (
            os.path.realpath(old_dir) != os.path.realpath(new_dir)):
        return [f"train_dir: {old_dir!r} -> {new_dir!r}"]
    old_sha, new_sha = old_d.get("train_sha256"), new_d.get("train_sha256")
    if old_sha and old_sha != new_sha:
        return [f"the rows of {new_dir} (train_sha256: {old_sha!r} -> {new_sha!r}; they "
                "changed since)"]
    return []


def check_resumable(old: dict[str, Any], new: dict[str, Any], model_dir: str) -> list[str]:
    """Refuse a resume whose networks or data differ; return the other settings changed.

    Raises:
        GanRunError: noise_dim, width, the data set, its class count, train size,
            validation split, train folder or its rows (``train_sha256``) differ.
    """
    old_s, new_s = old.get("settings", {}), new["settings"]
    old_d, new_d = old.get("data", {}), new["data"]
    differences = [f"{k}: {old_s.get(k)!r} -> {new_s[k]!r}" for k in MODEL_SETTINGS
                   if old_s.get(k) != new_s[k]]
    differences += [f"{k}: {old_d.get(k)!r} -> {new_d.get(k)!r}" for k in MODEL_DATA
                    if old_d.get(k) != new_d.get(k)]
    differences += _train_data_differences(old_d, new_d)
    if differences:
        raise GanRunError(
            f"{model_dir} holds a GAN run with different settings ({'; '.join(differences)}); "
            "it cannot be resumed with these. Use a new --model_dir (or the original settings).")
    return [k for k in new_s if k != "epochs" and old_s.get(k) != new_s[k]]


def _repair_history(model_dir: str, epoch: int) -> None:
    """Make ``history.jsonl`` hold exactly the epochs 1..``epoch`` of the checkpoint.

    A line is appended only after its checkpoint is saved, so the only line a kill can
    lose is the checkpoint's own (killed between the save and the append): it is
    restored from ``pending_history.json``, written before the save. Torn lines and
    lines of later epochs (none, unless files were copied around) are dropped.
    """
    path = os.path.join(model_dir, HISTORY_FILE)
    entries = [e for e in read_history(model_dir) if e["epoch"] <= epoch]
    if not any(e["epoch"] == epoch for e in entries):
        pending = os.path.join(model_dir, CHECKPOINT_DIR, PENDING_HISTORY)
        if os.path.exists(pending):
            try:
                entry = json_files.load(pending)
            except ValueError as exc:  # damaged: the line is lost, the run is not
                logging.warning("%s: damaged (%s); epoch %d has no history line", pending, exc,
                                epoch)
                entry = {}
            if isinstance(entry, dict) and entry.get("epoch") == epoch:
                entries.append(entry)
                logging.info("history.jsonl: restored the line of epoch %d", epoch)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _non_finite_weights(models: GanModels) -> list[str]:
    bad = []
    for model in (models.generator, models.discriminator, models.classifier):
        for variable in model.weights:
            if not np.all(np.isfinite(np.asarray(variable))):
                bad.append(variable.path)
    return bad


def _summary_line(epoch: int, epochs: int, entry: dict[str, Any]) -> str:
    return (f"epoch {epoch}/{epochs} | D {entry['d_loss']:.3f} | G {entry['g_loss']:.3f} "
            f"(adv {entry['g_adversarial']:.3f}, id {entry['identity_ce']:.3f}, "
            f"ms {entry['mode_seeking']:.2f}) | C acc {entry['classifier_accuracy']:.3f} | "
            f"diversity {entry['diversity']:.3f} | {entry['seconds']:.1f}s")


class GanTrainer:
    """The epoch loop of one run folder (see the module docstring).

    Args:
        data: the GAN's data (train split in [-1, 1]).
        config: the run's settings.
        model_dir: the run folder (created; resumed when it holds a checkpoint).
        stream: where progress and the per-epoch lines go (default stdout).
    """

    def __init__(self, data: GanData, config: GanConfig, model_dir: str,
                 stream: TextIO | None = None):
        config.validate()
        self.data, self.config, self.model_dir = data, config, model_dir
        self.stream = stream if stream is not None else sys.stdout
        self.models = build_models(data.num_classes, config)
        self.manager = tf.train.CheckpointManager(
            self.models.checkpoint(), os.path.join(model_dir, CHECKPOINT_DIR),
            max_to_keep=CHECKPOINTS_KEPT, checkpoint_name="ckpt")
        self.history: list[dict[str, Any]] = []

    def restore(self) -> int:
        """Load the last checkpoint if there is one; write config.json; return its epoch."""
        run_config = make_run_config(self.data, self.config)
        start = 0
        latest = self.manager.latest_checkpoint
        if latest:
            old = read_run_config(self.model_dir)
            changed = check_resumable(old, run_config, self.model_dir)
            try:
                self.models.checkpoint().restore(latest).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as exc:
                quiet_unrestored_warnings()
                raise GanRunError(f"{latest}: cannot resume from this checkpoint "
                                  f"({str(exc).splitlines()[0][:300]})") from None
            start = int(self.models.epoch.numpy())
            for optimizer in (self.models.g_optimizer, self.models.d_optimizer,
                              self.models.c_optimizer):
                optimizer.learning_rate.assign(self.config.learning_rate)
            history = list(old.get("setting_changes", []))
            if changed:
                history.append({"from_epoch": start + 1, "changed": {
                    k: [old["settings"].get(k), run_config["settings"][k]] for k in changed}})
                logging.info("settings changed from epoch %d: %s", start + 1, changed)
            if history:
                run_config["setting_changes"] = history
            _repair_history(self.model_dir, start)
            print(f"resuming {self.model_dir} after epoch {start}", file=self.stream, flush=True)
        else:
            if os.path.exists(os.path.join(self.model_dir, CONFIG_FILE)):
                read_run_config(self.model_dir)  # refuses another method's folder
            _repair_history(self.model_dir, 0)  # lines of a run whose checkpoints are gone
        write_config_file(os.path.join(self.model_dir, CONFIG_FILE), run_config)
        self.history = read_history(self.model_dir)
        return start

    def _save(self, epoch: int, entry: dict[str, Any]) -> None:
        self.models.epoch.assign(epoch)
        write_json_atomic(os.path.join(self.model_dir, CHECKPOINT_DIR, PENDING_HISTORY), entry)
        self.manager.save(checkpoint_number=epoch)
        append_history_line(self.model_dir, entry, HISTORY_FILE)
        self.history.append(entry)

    def _kept(self, last_good: int) -> str:
        if last_good:
            return (f"the last good checkpoint (epoch {last_good}) in {self.model_dir} is kept; "
                    "lower the learning rate or the loss weights to resume")
        return "nothing was saved (no epoch had finished)"

    def run_epoch(self, epoch: int, step_fn, last_good: int) -> dict[str, Any]:
        """Train one epoch; return its history line (not yet saved)."""
        cfg, data = self.config, self.data
        n = len(data.train_labels)
        batches = epoch_batches(data.train_labels, cfg.noise_dim, cfg.seed, epoch)
        steps = math.ceil(n / cfg.batch_size)
        if cfg.max_steps_per_epoch:
            steps = min(steps, cfg.max_steps_per_epoch)
        progress = epoch_progress(epoch, cfg.epochs, steps, self.stream, cfg.log_every_steps)
        start = time.perf_counter()
        sums = dict.fromkeys(METRICS, 0.0)
        images = 0
        for s in range(steps):
            idx = batches.order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            x = data.train_images[idx]
            partner = partner_images(data.train_images, batches.partners[idx], batches.flip[idx])
            out = {k: float(v) for k, v in step_fn(x, partner, data.train_labels[idx],
                                                   batches.z1[idx], batches.z2[idx]).items()}
            bad = [k for k in ("d_loss", "g_loss", "classifier_ce") if not math.isfinite(out[k])]
            if bad:
                raise GanNonFiniteError(
                    f"non-finite loss ({', '.join(f'{k}={out[k]}' for k in bad)}) at epoch "
                    f"{epoch}, step {s + 1}; {self._kept(last_good)}", epoch, s + 1, last_good)
            images += len(idx)
            for k in METRICS:
                sums[k] += out[k] * len(idx)
            progress.update(s + 1, loss=sums["g_loss"] / images, images=images)
        entry = {k: sums[k] / max(images, 1) for k in METRICS}
        entry.update(epoch=epoch, steps=steps, images=images,
                     seconds=round(time.perf_counter() - start, 3))
        bad = _non_finite_weights(self.models)
        if bad:
            raise GanNonFiniteError(
                f"non-finite weights after epoch {epoch} ({', '.join(bad[:3])}); "
                f"{self._kept(last_good)}", epoch, steps, last_good)
        progress.finish(_summary_line(epoch, cfg.epochs, entry))
        return entry

    def train(self) -> list[dict[str, Any]]:
        """Train up to ``config.epochs`` (resuming); return the whole history."""
        os.makedirs(self.model_dir, exist_ok=True)
        with run_lock(self.model_dir):
            start = self.restore()
            if start >= self.config.epochs:
                print(f"{self.model_dir} already holds {start} epochs (--epochs "
                      f"{self.config.epochs}): nothing to train", file=self.stream, flush=True)
                return self.history
            step_fn = make_train_step(self.models, self.config)
            for epoch in range(start + 1, self.config.epochs + 1):
                entry = self.run_epoch(epoch, step_fn, last_good=epoch - 1)
                self._save(epoch, entry)
        return self.history


def train_gan(data: GanData, config: GanConfig, model_dir: str,
              stream: TextIO | None = None) -> tuple[GanModels, list[dict[str, Any]]]:
    """Train (or resume) a GAN run; returns the trained models and the run's history.

    Raises:
        GanRunError: ``model_dir`` holds another kind of run, or one with other networks.
        GanNonFiniteError: a loss or weight became NaN/inf (last checkpoint kept).
        RunLockedError: another process trains into ``model_dir``.
    """
    trainer = GanTrainer(data, config, model_dir, stream)
    history = trainer.train()
    return trainer.models, history
