"""The cost of --distribution mirrored on this CPU: two logical devices against one.

Runs the shared loop's DCBH training step side by side, in two fresh processes (a
process's CPU devices are fixed at its first TensorFlow op): one device, and two
logical CPU devices under MirroredStrategy, same global batch, same data; prints
images/s (median over timed steps after warm-up) and the overhead. On a CPU both
configurations share the same cores, so this measures what mirroring costs (the
all-reduces, the split batch), not a speed-up; on GPUs each replica has its own.

    python bench/distribution.py --batch_size 64 --steps 30
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("batch_size", 64, "global batch")
flags.DEFINE_integer("steps", 30, "timed steps")
flags.DEFINE_integer("warmup", 5, "untimed steps first")
flags.DEFINE_float("width_multiplier", 0.25, "DCBH backbone width")
flags.DEFINE_integer("num_bits", 48, "code length")
FLAGS = flags.FLAGS

_WORKER = r"""
import json, shutil, statistics, sys, tempfile, time
distribution = sys.argv[1]
batch, steps, warmup = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
width, bits = float(sys.argv[5]), int(sys.argv[6])
from common.training.distribution import configure_cpu_devices, distributed_epoch, make_strategy
if distribution == "mirrored":
    configure_cpu_devices(2)
import keras, numpy as np, tensorflow as tf
from common.training.data import SplitData
from common.data import Normalization
from common.training.loop import TrainConfig, _Trainer
from dcbh_tf.method import DCBH
rng = np.random.default_rng(0)
n = batch * (steps + warmup)
images = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
labels = rng.integers(0, 100, n).astype(np.int64)
data = SplitData(images, labels, images[:batch], labels[:batch], 100, Normalization(0.0, 1.0), {})
keras.utils.set_random_seed(0)
strategy = make_strategy(distribution) if distribution != "default" else None
trainer = _Trainer(DCBH(num_bits=bits, width_multiplier=width), data,
                   TrainConfig(epochs=1, model_dir=tempfile.mkdtemp(),
                               batch_size=batch, distribution=distribution), strategy)
batches = (trainer.pipeline.epoch(0) if strategy is None
           else distributed_epoch(strategy, trainer.pipeline, 0))
times = []
for i, (x, y) in enumerate(batches):
    start = time.perf_counter()
    trainer.steps.train_step(x, y)["loss"].numpy()
    if i >= warmup:
        times.append(time.perf_counter() - start)
shutil.rmtree(trainer.config.model_dir, ignore_errors=True)
print(json.dumps({"seconds_per_step": statistics.median(times), "replicas":
                  strategy.num_replicas_in_sync if strategy else 1}))
"""


def measure(distribution: str) -> dict:
    """Median step time of one configuration, in its own process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-c", _WORKER, distribution, str(FLAGS.batch_size), str(FLAGS.steps),
         str(FLAGS.warmup), str(FLAGS.width_multiplier), str(FLAGS.num_bits)],
        env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{distribution} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    del argv
    figures = {name: measure(name) for name in ("default", "mirrored")}
    print(f"DCBH width {FLAGS.width_multiplier}, {FLAGS.num_bits} bits, global batch "
          f"{FLAGS.batch_size}, median of {FLAGS.steps} steps")
    for name, f in figures.items():
        print(f"  {name:9s} {f['replicas']} device(s): {1000 * f['seconds_per_step']:7.1f} ms/step"
              f", {FLAGS.batch_size / f['seconds_per_step']:7.0f} images/s")
    ratio = figures["mirrored"]["seconds_per_step"] / figures["default"]["seconds_per_step"]
    print(f"  mirrored / default step time: {ratio:.2f}x")


if __name__ == "__main__":
    app.run(main)
