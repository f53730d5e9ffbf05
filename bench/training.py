"""Benchmark: training throughput, the DCBH step's overhead, and the input pipeline's rate.

In one process, on random images of the original shape (batch 256 by default):

1. ``model.fit`` of the DCBH network with a plain cross-entropy loss on its logits
   (the reference a Keras user would write);
2. the DCBH training step of the shared loop (all five loss parts, the direct center
   update, Adam) on the same network and batches;
3. the ``ArrayPipeline`` alone (gather + batch + prefetch) over a FaceScrub-sized split.

Both training paths run ``--steps`` timed steps after ``--warmup`` untimed ones and
report the median step time. On a small shared CPU machine two identical blocks of steps
differ by 10% or more (measured: 2.23 s vs 2.48 s per step), so the overhead is taken from
an interleaved run instead: one step of the plain model (``train_on_batch``: the same
compiled step ``model.fit`` runs), then one DCBH step, repeated; overhead = median over
rounds of the per-round ratio, minus 1. Slow drift of the machine cancels in each pair.

    python bench/training.py                          # full width, CPU
    python bench/training.py --width_multiplier 0.25 --steps 20
    python bench/training.py --mixed_precision --jit_compile   # on a GPU
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("batch_size", 256, "batch size (the original: 256)")
flags.DEFINE_integer("num_classes", 530, "classes (FaceScrub: 530)")
flags.DEFINE_integer("num_bits", 48, "code bits")
flags.DEFINE_float("width_multiplier", 1.0, "backbone width (1.0 = original)")
flags.DEFINE_integer("steps", 6, "timed steps per training path")
flags.DEFINE_integer("warmup", 2, "untimed steps first (tracing, compilation)")
flags.DEFINE_integer("pipeline_images", 67177, "images in the pipeline test (FaceScrub train)")
flags.DEFINE_bool("mixed_precision", False, "mixed precision (float16 on GPU, bfloat16 on CPU)")
flags.DEFINE_bool("jit_compile", False, "XLA-compile both training paths")
flags.DEFINE_integer("seed", 0, "random seed")
FLAGS = flags.FLAGS


def _median_step_seconds(step, batches, warmup: int) -> tuple[float, list[float]]:
    times = []
    for i, (x, y) in enumerate(batches):
        start = time.perf_counter()
        out = step(x, y)
        np.asarray(out)  # wait for the device
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def plain_ce_model(keras, build):
    """The DCBH network's logits with a plain cross-entropy loss, compiled for ``fit``."""
    model = build()
    logits_model = keras.Model(model.inputs, model.outputs[0])
    logits_model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=FLAGS.jit_compile)
    return logits_model


def bench_fit(keras, tf, build, batches) -> float:
    """Seconds per step of ``model.fit`` with a plain CE loss on the logits."""
    logits_model = plain_ce_model(keras, build)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self._start = [], 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step's result is ready
            self.times.append(time.perf_counter() - self._start)

    timer = Timer()
    logits_model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, shuffle=False, verbose=0,
                     callbacks=[timer])
    return statistics.median(timer.times[FLAGS.warmup:])


def dcbh_train_step(keras):
    """The shared loop's DCBH training step (all losses, center update, Adam)."""
    from common.training.loop import TrainConfig
    from common.training.optimizers import make_optimizer
    from common.training.steps import make_steps
    from dcbh_tf.method import DCBH

    method = DCBH(num_bits=FLAGS.num_bits, width_multiplier=FLAGS.width_multiplier)
    model = method.build_model(FLAGS.num_classes)
    config = TrainConfig(epochs=1, model_dir="unused")
    optimizer = make_optimizer(config, keras.mixed_precision.global_policy().name,
                               model.trainable_variables)
    step = make_steps(model, method, [optimizer], FLAGS.jit_compile).train_step
    return lambda images, labels: step(images, labels)["loss"]


def bench_dcbh_step(keras, tf, batches) -> float:
    """Seconds per step of the shared loop's DCBH training step."""
    train_step = dcbh_train_step(keras)
    tensors = [(tf.constant(x), tf.constant(y)) for x, y in batches]
    seconds, _ = _median_step_seconds(train_step, tensors, FLAGS.warmup)
    return seconds


def bench_interleaved(keras, tf, build, batches) -> tuple[float, float, float]:
    """(plain s/step, DCBH s/step, median per-round ratio), steps alternating."""
    plain = plain_ce_model(keras, build)
    dcbh = dcbh_train_step(keras)
    tensors = [(tf.constant(x), tf.constant(y)) for x, y in batches]
    plain_times, dcbh_times = [], []
    for i, (x, y) in enumerate(tensors):
        start = time.perf_counter()
        plain.train_on_batch(x, y)
        middle = time.perf_counter()
        np.asarray(dcbh(x, y))
        end = time.perf_counter()
        if i >= FLAGS.warmup:
            plain_times.append(middle - start)
            dcbh_times.append(end - middle)
    ratios = [d / p for d, p in zip(dcbh_times, plain_times)]
    return statistics.median(plain_times), statistics.median(dcbh_times), statistics.median(ratios)


def bench_pipeline(tf) -> float:
    """Images per second the input pipeline delivers (one epoch, nothing else running)."""
    from common.data.pipeline import ArrayPipeline

    rng = np.random.default_rng(FLAGS.seed)
    images = rng.uniform(-1, 1, (FLAGS.pipeline_images, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, FLAGS.num_classes, FLAGS.pipeline_images)
    pipe = ArrayPipeline(images, labels, FLAGS.batch_size, shuffle=True, seed=FLAGS.seed)
    for _ in pipe.epoch(0).take(3):  # warm up
        pass
    start = time.perf_counter()
    count = 0
    for x, _ in pipe.epoch(1):
        count += int(x.shape[0])
    return count / (time.perf_counter() - start)


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from dcbh_tf.model import build_dcbh

    gpus = tf.config.list_physical_devices("GPU")
    if FLAGS.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "mixed_bfloat16")
    keras.utils.set_random_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    n = FLAGS.warmup + FLAGS.steps
    batches = [(rng.uniform(-1, 1, (FLAGS.batch_size, 32, 32, 3)).astype(np.float32),
                rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int64))
               for _ in range(n)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"GPU: {', '.join(g.name for g in gpus) or 'none'}; TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"DCBH {FLAGS.num_bits} bits, {FLAGS.num_classes} classes, width x"
          f"{FLAGS.width_multiplier}, batch {FLAGS.batch_size}, policy "
          f"{keras.mixed_precision.global_policy().name}, XLA {FLAGS.jit_compile}; median of "
          f"{FLAGS.steps} steps after {FLAGS.warmup} warm-up steps")

    def build():
        return build_dcbh(FLAGS.num_classes, FLAGS.num_bits,
                          width_multiplier=FLAGS.width_multiplier)

    fit = bench_fit(keras, tf, build, batches)
    dcbh = bench_dcbh_step(keras, tf, batches)
    rate = FLAGS.batch_size / dcbh
    print(f"model.fit, plain cross-entropy : {fit * 1e3:9.1f} ms/step "
          f"{FLAGS.batch_size / fit:9.1f} img/s")
    print(f"DCBH step (all losses, centers): {dcbh * 1e3:9.1f} ms/step {rate:9.1f} img/s")
    print(f"DCBH / model.fit, blocks       : {100 * (dcbh / fit - 1):+8.1f} % (drift-prone)")
    plain_step, dcbh_step, ratio = bench_interleaved(keras, tf, build, batches)
    print(f"interleaved: plain CE {plain_step * 1e3:.1f} ms/step, DCBH {dcbh_step * 1e3:.1f} "
          f"ms/step")
    print(f"DCBH overhead (interleaved)    : {100 * (ratio - 1):+8.1f} % (target <= +10 %)")
    pipeline = bench_pipeline(tf)
    print(f"input pipeline                 : {pipeline:9.0f} img/s = {pipeline / rate:.0f}x the "
          "DCBH training rate (target >= 10x)")


if __name__ == "__main__":
    app.run(main)
