"""Does G keep identity? An independent classifier's accuracy on G's variants.

Why independent: C, the classifier inside G's loss, is what G learns to satisfy, so
C's accuracy on G's images says little (G can find C's blind spots). The evaluator here
is a separate CNN (another architecture with batch norm, another seed), trained only
on the real train split after the GAN, never seen by G. Its top-1 accuracy on G's
variants of TEST images, divided by its accuracy on the real test images, is the
"identity kept" figure: 1.0 means variants are recognised as well as real photos.
Diversity is reported in pixel units (0..255): how far a variant is from its source,
how far two variants of one source are from each other, and, for scale, how far two
real images of one identity are.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from dfh_tf.gan.data import GanData
from dfh_tf.gan.pairs import partner_images, sample_partners
from dfh_tf.gan.sampling import draw_noise, generate

EVALUATOR_FILTERS = (32, 64, 128)
EVALUATOR_SEED_OFFSET = 7919  # the evaluator's seed: the run's seed + this (never C's)
PIXEL_UNITS = 127.5  # [-1, 1] differences -> 0..255 pixel differences


def build_evaluator(num_classes: int) -> keras.Model:
    """The evaluator CNN: two 3x3 convolutions per resolution, batch norm, ReLU, pooling.

    Deliberately unlike C (batch norm, ReLU, max pooling, dropout), so that it does not
    share C's blind spots.
    """
    x_in = keras.Input((32, 32, 3), name="image")
    h = x_in
    for i, filters in enumerate(EVALUATOR_FILTERS, start=1):
        for j in (1, 2):
            h = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"e{i}{j}_conv")(h)
            h = layers.BatchNormalization(momentum=0.9, name=f"e{i}{j}_bn")(h)
            h = layers.ReLU(name=f"e{i}{j}_relu")(h)
        h = layers.MaxPooling2D(name=f"e{i}_pool")(h)
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    h = layers.Dropout(0.3, name="dropout")(h)
    return keras.Model(x_in, layers.Dense(num_classes, name="logits")(h), name="evaluator")


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flips and shifts of up to 2 pixels (edge padding)."""
    out = images.copy()
    flip = rng.random(len(out)) < 0.5
    out[flip] = out[flip][:, :, ::-1]
    padded = np.pad(out, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 5, size=2)  # one shift per batch: cheap, still varied
    return np.ascontiguousarray(padded[:, dy:dy + 32, dx:dx + 32])


def train_evaluator(images: np.ndarray, labels: np.ndarray, num_classes: int, epochs: int,
                    seed: int, batch_size: int = 128,
                    stream: TextIO | None = None) -> keras.Model:
    """Train the evaluator on real images (flips, small shifts); Adam 1e-3, cross-entropy.

    Args:
        images: (n, 32, 32, 3) real train images in [-1, 1].
        labels: (n,) identities.
        num_classes: classifier width.
        epochs: passes over the images.
        seed: weights and batch order.
        batch_size: images per step.
        stream: where the per-epoch line goes (default stdout).
    """
    stream = stream if stream is not None else sys.stdout
    keras.utils.set_random_seed(seed)
    model = build_evaluator(num_classes)
    optimizer = keras.optimizers.Adam(1e-3)
    spec = tf.TensorSpec((None, 32, 32, 3), tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec((None,), tf.int64)])
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.int32), logits=logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    rng = np.random.default_rng([seed, 1])
    for epoch in range(1, epochs + 1):
        start, total = time.perf_counter(), 0.0
        order = rng.permutation(len(labels))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            total += float(step(_augment(images[idx], rng), labels[idx])) * len(idx)
        print(f"evaluator epoch {epoch}/{epochs} | loss {total / len(labels):.4f} | "
              f"{time.perf_counter() - start:.1f}s", file=stream, flush=True)
    return model


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (inference mode) on ``images``."""
    correct = 0
    for s in range(0, len(labels), batch_size):
        logits = np.asarray(model(images[s:s + batch_size], training=False))
        correct += int(np.sum(np.argmax(logits, -1) == labels[s:s + batch_size]))
    return correct / max(len(labels), 1)


def _subset(images: np.ndarray, labels: np.ndarray, limit: int | None,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or len(labels) <= limit:
        return images, labels
    idx = np.sort(rng.choice(len(labels), size=limit, replace=False))
    return images[idx], labels[idx]


def identity_report(generator: keras.Model, data: GanData, noise_dim: int, seed: int,
                    evaluator_epochs: int = 15, max_images: int | None = 10000,
                    stream: TextIO | None = None) -> dict[str, Any]:
    """Train the evaluator, then measure identity and diversity of G's variants.

    Args:
        generator: the trained G.
        data: the GAN's data (train split; test split if any).
        noise_dim: length of z.
        seed: the run's seed (the evaluator uses ``seed + 7919``; noises from ``seed``).
        evaluator_epochs: the evaluator's training epochs.
        max_images: evaluate on at most this many images per split (a seeded sample).
        stream: progress lines (default stdout).

    Returns:
        The JSON-able report (``identity_report.json``); ``identity_kept`` is
        accuracy(G(test)) / accuracy(real test), None without a test split.
    """
    evaluator_seed = seed + EVALUATOR_SEED_OFFSET
    start = time.perf_counter()
    evaluator = train_evaluator(data.train_images, data.train_labels, data.num_classes,
                                evaluator_epochs, evaluator_seed, stream=stream)
    rng = np.random.default_rng([seed, 2])
    splits = {"train": (data.train_images, data.train_labels)}
    excluded = 0
    if data.test_labels is not None and data.test_images is not None:
        known = np.isin(data.test_labels, data.train_labels)  # others cannot be classified
        excluded = int(np.sum(~known))
        if known.any():
            splits["test"] = (data.test_images[known], data.test_labels[known])
    acc: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    variants_of: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, (images, labels) in splits.items():
        images, labels = _subset(images, labels, max_images, rng)
        fake1 = generate(generator, images, draw_noise(rng, len(labels), noise_dim))
        fake2 = generate(generator, images, draw_noise(rng, len(labels), noise_dim))
        acc[f"real_{name}"] = accuracy(evaluator, images, labels)
        acc[f"generated_{name}"] = accuracy(evaluator, fake1, labels)
        counts[name] = int(len(labels))
        variants_of[name] = (images, fake1, fake2)
    images, fake1, fake2 = variants_of["test" if "test" in variants_of else "train"]
    partners, flip = sample_partners(data.train_labels, np.random.default_rng([seed, 3]))
    real_pairs = float(np.mean(np.abs(
        data.train_images - partner_images(data.train_images, partners, flip)))) * PIXEL_UNITS

    def ratio(split: str) -> float | None:
        real, fake = acc.get(f"real_{split}"), acc.get(f"generated_{split}")
        return None if real in (None, 0) or fake is None else fake / real

    return {
        "identity_kept": ratio("test"),
        "identity_kept_train": ratio("train"),
        "accuracy": {k: acc.get(k) for k in ("real_test", "generated_test", "real_train",
                                             "generated_train")},
        "images": {**counts, "test_excluded_unknown_label": excluded},
        "diversity_pixels": {
            "split": "test" if "test" in variants_of else "train",
            "mean_abs_variant_minus_source": float(np.mean(np.abs(fake1 - images))) * PIXEL_UNITS,
            "mean_abs_between_two_variants": float(np.mean(np.abs(fake1 - fake2))) * PIXEL_UNITS,
            "mean_abs_between_real_same_identity_pairs": real_pairs,
        },
        "evaluator": {"architecture": "3x(2 conv3x3+BN+ReLU, maxpool) 32/64/128, GAP, "
                                      "dropout 0.3, dense", "epochs": evaluator_epochs,
                      "seed": evaluator_seed, "augmentation": "flips, shifts <= 2 px",
                      "optimizer": "Adam 1e-3"},
        "seconds": round(time.perf_counter() - start, 1),
        "definition": "identity_kept = accuracy on G(test image, z) with the source's label / "
                      "accuracy on the real test images, by an evaluator trained on the real "
                      "train split only and never used in G's training",
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines a person reads."""
    acc = report["accuracy"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    div = report["diversity_pixels"]
    return "\n".join([
        f"identity check (independent evaluator, {report['evaluator']['epochs']} epochs):",
        f"  accuracy real test {pct(acc['real_test'])} | generated test "
        f"{pct(acc['generated_test'])} | real train {pct(acc['real_train'])} | generated train "
        f"{pct(acc['generated_train'])}",
        f"  identity kept (generated test / real test): {pct(report['identity_kept'])}",
        f"  diversity ({div['split']}, pixels 0..255): |G(x,z)-x| "
        f"{div['mean_abs_variant_minus_source']:.1f} | |G(x,z1)-G(x,z2)| "
        f"{div['mean_abs_between_two_variants']:.1f} | real same-identity pairs "
        f"{div['mean_abs_between_real_same_identity_pairs']:.1f}",
    ])
