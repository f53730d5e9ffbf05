"""DDCH vs DCBH on real faces (LFW, 311 identities, 32x32), several seeds, one budget.

Trains every (method, seed) with the same flags through the methods' own command
lines, then prints a table of mean and spread of the best_map state's figures (exact
Hamming, index ties). Each run lives in ``--out/<method>_s<seed>``; re-running resumes
unfinished runs and only re-reads finished ones.

Needs ``../shared/data/lfw_deepfunneled_32`` (research-only data, never in the repo), or
``--data`` pointing at a folder with ``train/`` and ``test/`` in the original layout;
skips with a message when absent.

    python bench/lfw_compare.py --out runs/lfw_compare --seeds 0,1,2 --epochs 30
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "lfw_deepfunneled_32")

flags.DEFINE_string("data", DEFAULT_DATA, "folder holding train/ and test/")
flags.DEFINE_string("out", os.path.join("runs", "lfw_compare"), "parent of the run folders")
flags.DEFINE_list("methods", ["dcbh", "ddch"], "methods to compare")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
flags.DEFINE_integer("epochs", 30, "epochs per run")
flags.DEFINE_integer("num_bits", 48, "code length")
flags.DEFINE_integer("batch_size", 64, "batch size")
flags.DEFINE_float("width_multiplier", 0.25, "backbone width of both methods")
flags.DEFINE_integer("eval_every", 10, "evaluation period (epochs)")
flags.DEFINE_list("extra", [],
                  "extra flags for every train command, e.g. --extra=--weight_decay=l2")
FLAGS = flags.FLAGS

FIGURES = ("map", "precision_at_k", "precision_within_radius", "recall_within_radius")


def train_command(method: str, seed: int, model_dir: str) -> list[str]:
    return [sys.executable, "-m", f"{method}_tf.train", "--dataset", "folder",
            "--train_dir", os.path.join(FLAGS.data, "train"),
            "--test_dir", os.path.join(FLAGS.data, "test"),
            "--num_bits", str(FLAGS.num_bits), "--epochs", str(FLAGS.epochs),
            "--batch_size", str(FLAGS.batch_size),
            "--width_multiplier", str(FLAGS.width_multiplier),
            "--eval_every", str(FLAGS.eval_every), "--shuffle", "--seed", str(seed),
            "--log_every_steps", "0", "--model_dir", model_dir, *FLAGS.extra]


def summarise(results: dict[str, list[dict]]) -> str:
    lines = [f"| method | runs | {' | '.join(FIGURES)} | train s/run |", "|---" * 7 + "|"]
    for method, runs in results.items():
        cells = []
        for key in FIGURES:
            values = [r["best_map"][key] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} +- {spread:.4f}")
        seconds = statistics.mean(r["train_seconds_total"] for r in runs)
        lines.append(f"| {method} | {len(runs)} | {' | '.join(cells)} | {seconds:.0f} |")
    lines.append("")
    lines.append("per run (best_map): " + "; ".join(
        f"{m} seed {r['train_config']['seed']}: mAP {r['best_map']['map']:.4f} "
        f"(epoch {r['best_map']['epoch']})" for m, runs in results.items() for r in runs))
    return "\n".join(lines)


def main(argv):
    del argv
    if not (os.path.isdir(os.path.join(FLAGS.data, "train"))
            and os.path.isdir(os.path.join(FLAGS.data, "test"))):
        print(f"skipped: no LFW data at {FLAGS.data} (train/ and test/ needed)")
        return
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    results: dict[str, list[dict]] = {m: [] for m in FLAGS.methods}
    for seed in map(int, FLAGS.seeds):
        for method in FLAGS.methods:
            model_dir = os.path.join(FLAGS.out, f"{method}_s{seed}")
            start = time.perf_counter()
            print(f"== {method} seed {seed} -> {model_dir}", flush=True)
            with open(os.path.join(os.makedirs(model_dir, exist_ok=True) or model_dir,
                                   "train.log"), "a") as log:
                done = subprocess.run(train_command(method, seed, model_dir), env=env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT)
            if done.returncode:
                sys.exit(f"{method} seed {seed} failed (exit {done.returncode}); see "
                         f"{model_dir}/train.log")
            with open(os.path.join(model_dir, "metrics.json")) as f:
                report = json.load(f)
            results[method].append(report)
            print(f"   best_map mAP {report['best_map']['map']:.4f} (epoch "
                  f"{report['best_map']['epoch']}), {time.perf_counter() - start:.0f} s",
                  flush=True)
    print(f"\nLFW 32x32, {FLAGS.num_bits} bits, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}, "
          f"width x{FLAGS.width_multiplier}, shuffled, exact Hamming, index ties, best_map state")
    print(summarise(results))


if __name__ == "__main__":
    app.run(main)
