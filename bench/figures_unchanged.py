"""Check that this checkout measures what another version of the code measured, bit for bit.

Why: long table runs (an LFW table is many hours here) run from a frozen copy of the code
while work goes on on main; they stay valid only if main's changes keep every figure. This
runs the same short ``--deterministic`` table cell of each row from this checkout and from
the other version (a git commit, exported with ``git archive``, or a folder), and compares
their per-epoch losses, validation and test figures, precision curves and chosen state.

    python bench/figures_unchanged.py --against 50d791a \
        --train_dir ../shared/data/lfw_deepfunneled_32/train \
        --test_dir ../shared/data/lfw_deepfunneled_32/test
    python bench/figures_unchanged.py --against_dir /work/frozen --rows ddh --epochs 1

Without ``--train_dir`` it runs on a small synthetic set. The other version must have
``common.reproduce.run_cell`` with the flags used here (commit 50d791a and later). Prints
one line per row and exits 1 if any row differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

from common.reproduce.layout import CELL_FILE, RUN_FOLDER, cell_dir  # no TensorFlow here
from common.runs.history import read_history_lines  # json only: no TensorFlow here

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("against", None, "A git commit of this repository to compare with.")
flags.DEFINE_string("against_dir", None, "Or a folder holding the other version's code.")
flags.DEFINE_list("rows", ["ddh", "ddah", "dagh", "dcbh", "ddch", "dfh"], "Harness rows.")
flags.DEFINE_integer("epochs", 2, "Epochs per cell (every epoch evaluated).", lower_bound=1)
flags.DEFINE_integer("bits", 48, "Code length.", lower_bound=1)
flags.DEFINE_float("width_multiplier", 0.25, "Width of the rows that have one.")
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_string("train_dir", None, "Train split folder (default: a synthetic set).")
flags.DEFINE_string("test_dir", None, "Test split folder.")
flags.DEFINE_string("out", None, "Folder for both versions' cells (default: a temporary one).")
FLAGS = flags.FLAGS

# What a cell measured; "command" (the code's path) and "wall_seconds" differ by nature.
COMPARED = ("figures", "validation_figures", "state_epoch", "size", "curves")


def export_commit(commit: str, folder: str) -> str:
    """The tree of ``commit`` written to ``folder`` (``git archive``); returns the folder."""
    os.makedirs(folder, exist_ok=True)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], capture_output=True)
    if archive.returncode:
        raise SystemExit(f"error: git archive {commit}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return folder


def run_cell(code: str, out: str, row: str, data_dir: str) -> subprocess.CompletedProcess:
    """One deterministic cell of ``row`` run by the code in folder ``code``."""
    data = (["--dataset=folder", f"--train_dir={FLAGS.train_dir}", f"--test_dir={FLAGS.test_dir}"]
            if FLAGS.train_dir else
            ["--dataset=synthetic", f"--data_dir={data_dir}", "--synthetic_num_identities=12",
             "--synthetic_train_per_identity=10", "--synthetic_test_per_identity=3"])
    argv = [sys.executable, "-m", "common.reproduce.run_cell", f"--out={out}",
            f"--method={row}", f"--bits={FLAGS.bits}", "--seed=0", *data,
            f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}", "--shuffle",
            "--eval_every=1", f"--width_multiplier={FLAGS.width_multiplier}",
            "--checkpoint=best_map", "--deterministic", "--validation_fraction=0.1",
            "--validation_seed=0"]
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True)


def measured(out: str, row: str) -> dict:
    """What the finished cell of ``row`` under ``out`` measured, with its epochs' losses."""
    folder = cell_dir(out, row, FLAGS.bits)
    with open(os.path.join(folder, CELL_FILE), encoding="utf-8") as f:
        cell = json.load(f)
    losses = [h["loss"] for h in read_history_lines(os.path.join(folder, RUN_FOLDER))]
    return {**{key: cell.get(key) for key in COMPARED}, "losses": losses}


def compare(here: str, there: str, out: str, rows: list[str]) -> list[str]:
    """Run every row from both code folders; returns the rows whose measurements differ."""
    data_dir = os.path.join(out, "data")
    differ = []
    for row in rows:
        results = {}
        for tag, code in (("here", here), ("there", there)):
            done = run_cell(code, os.path.join(out, tag), row, data_dir)
            if done.returncode:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
                raise SystemExit(f"error: the {row} cell of {code} failed: "
                                 f"{tail[0].removeprefix('error: ')}")
            results[tag] = measured(os.path.join(out, tag), row)
        keys = [key for key in results["here"] if results["here"][key] != results["there"][key]]
        mean_ap = results["here"]["figures"]["exact"]["map"]
        print(f"{row}: " + (f"DIFFERENT ({', '.join(keys)})" if keys else "bit-identical")
              + f"; test mAP here {mean_ap:.6f}, there "
              f"{results['there']['figures']['exact']['map']:.6f}", flush=True)
        if keys:
            differ.append(row)
    return differ


def main(argv: list[str]) -> None:
    del argv
    if bool(FLAGS.against) == bool(FLAGS.against_dir):
        raise SystemExit("error: give exactly one of --against COMMIT and --against_dir FOLDER")
    if bool(FLAGS.train_dir) != bool(FLAGS.test_dir):
        raise SystemExit("error: --train_dir and --test_dir go together")
    for name in ("train_dir", "test_dir", "out", "against_dir"):  # the cells run elsewhere
        if FLAGS[name].value:
            FLAGS[name].value = os.path.abspath(FLAGS[name].value)
    with tempfile.TemporaryDirectory() as scratch:
        out = FLAGS.out or scratch
        there = FLAGS.against_dir or export_commit(FLAGS.against, os.path.join(out, "code"))
        differ = compare(ROOT, there, out, FLAGS.rows)
    print("every row bit-identical" if not differ else f"rows that differ: {', '.join(differ)}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    app.run(main)
