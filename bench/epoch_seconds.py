"""Benchmark: seconds per training epoch of every method at several widths, on this machine.

Why: the results table compares methods at stated sizes; which sizes this CPU can train
within the table's budget (150 epochs) is a measurement, not a guess. Each row is one
method (a harness row name, e.g. ``dagh_two_pass``) at one width, trained by the shared
loop for ``--steps`` steps of ``--batch_size`` on the train split (after one untimed epoch
of the same steps: tracing), with the table's settings (48 bits, shuffled). An epoch is
then ``steps per epoch x seconds per step``; the test pass and evaluations are not
included (a few percent of an epoch at these sizes).

    python bench/epoch_seconds.py --train_dir ../shared/data/lfw_deepfunneled_32/train \
        --test_dir ../shared/data/lfw_deepfunneled_32/test
    python bench/epoch_seconds.py --rows dcbh,ddah --widths 0.25,1   # synthetic without --train_dir

Without ``--train_dir`` it runs on the synthetic set (4,000 train images, 100 identities).
Each measurement runs in a fresh process (the same reason as the harness's cells).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_list("rows", ["dcbh", "ddch", "ddh", "ddah", "dagh", "dagh_two_pass", "dfh"],
                  "Harness rows to time.")
flags.DEFINE_list("widths", ["0.25", "0.5", "1"], "Widths (a method without one runs once).")
flags.DEFINE_string("train_dir", None, "Train split folder (default: the synthetic set).")
flags.DEFINE_string("test_dir", None, "Test split folder.")
flags.DEFINE_float("validation_fraction", 0.1, "Held out as in the table (fewer steps).")
flags.DEFINE_integer("bits", 48, "Code length.")
flags.DEFINE_integer("batch_size", 64, "Batch size (the table's).")
flags.DEFINE_integer("steps", 15, "Timed steps.")
flags.DEFINE_integer("epochs", 150, "Epochs of the budget the last column projects.")
flags.DEFINE_string("one", None, "Internal: time one ROW@WIDTH in this process.")
FLAGS = flags.FLAGS


def _time_one(row: str) -> dict:
    from common.reproduce.methods import make_deep_method
    from common.training.data import load_split_data
    from common.training.loop import TrainConfig, train
    from common.training.reporting import read_history
    from common.models.size import trainable_weights

    if FLAGS.train_dir:
        data = load_split_data("folder", train_dir=FLAGS.train_dir, test_dir=FLAGS.test_dir,
                               validation_fraction=FLAGS.validation_fraction)
    else:
        data = load_split_data("synthetic", validation_fraction=FLAGS.validation_fraction)
    name, _, width = row.partition("@")
    method = make_deep_method(row, FLAGS.bits, float(width) if width else 1.0)
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(epochs=2, model_dir=folder, batch_size=FLAGS.batch_size,
                             shuffle=True, eval_every=0, max_steps_per_epoch=FLAGS.steps,
                             log_every_steps=0)
        import io
        import contextlib
        with contextlib.redirect_stdout(io.StringIO()):
            train(method, data, config)
        seconds = read_history(folder)[-1]["seconds"]
    model = method.build_model(data.num_classes)
    steps = -(-len(data.train_labels) // FLAGS.batch_size)
    return {"row": row, "weights": trainable_weights(model),
            "seconds_per_step": seconds / FLAGS.steps, "steps_per_epoch": steps,
            "seconds_per_epoch": seconds / FLAGS.steps * steps}


def main(argv):
    del argv
    if FLAGS.one:
        print(json.dumps(_time_one(FLAGS.one)))
        return
    from common.reproduce.methods import has_width
    rows = []
    for name in FLAGS.rows:
        for width in (FLAGS.widths if has_width(name) else [None]):
            rows.append(name if width is None else f"{name}@{width}")
    passed = [f"--{k}={getattr(FLAGS, k)}" for k in ("bits", "batch_size", "steps",
                                                     "validation_fraction")]
    passed += [f"--train_dir={FLAGS.train_dir}", f"--test_dir={FLAGS.test_dir}"] \
        if FLAGS.train_dir else []
    print(f"| row | weights (48 bits) | s / step (batch {FLAGS.batch_size}) | s / epoch | "
          f"h / {FLAGS.epochs} epochs |")
    print("|---|---|---|---|---|")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    for row in rows:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--one={row}",
                              *passed], capture_output=True, text=True, env=env, cwd=root)
        if out.returncode:
            print(f"| {row} | failed: {out.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {row} | {r['weights']:,} | {r['seconds_per_step']:.3f} | "
              f"{r['seconds_per_epoch']:.1f} | "
              f"{r['seconds_per_epoch'] * FLAGS.epochs / 3600:.2f} |",
              flush=True)


if __name__ == "__main__":
    app.run(main)
