"""One method's golden outputs: a 2-epoch deterministic synthetic run, its codes, its export.

    python tests/golden_run.py METHOD WORKDIR OUT.json

Runs the method's own command lines (``python -m <method>_tf.train`` / ``.export``, as a
user would), then, in this process, codes fixed images with the run's ``best_map`` state
and with the served export. Every float is written with ``float.hex`` so that a comparison
is bit for bit. tests/integration/test_golden_outputs.py runs this for every method, under settings
that make TensorFlow's CPU arithmetic the same on every x86-64 machine (no oneDNN, one
thread) and compares with tests/data/golden/<method>.json, recorded before the house's
refactoring (issue 25): the refactoring must not change a single bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = ["--dataset", "synthetic", "--synthetic_identities", "6",
             "--synthetic_train_per_identity", "6", "--synthetic_test_per_identity", "2"]
COMMON = ["--epochs", "2", "--batch_size", "12", "--shuffle", "--eval_every", "1",
          "--deterministic", "--log_every_steps", "0", "--num_bits", "12"]
METHOD_FLAGS = {
    "dcbh": ["--width_multiplier", "0.0625", "--code_length", "3"],
    "ddch": ["--width_multiplier", "0.0625"],
    "ddh": [],
    "ddah": ["--width_multiplier", "0.125"],
    "dagh": ["--width_multiplier", "0.125"],
    "dfh": ["--width_multiplier", "0.0625", "--feature_epochs", "1", "--feature_units", "16"],
}
METRICS = ("map", "precision_at_k", "precision_within_radius", "recall_within_radius")


def hexed(values) -> list:
    return [float(v).hex() for v in np.asarray(values, np.float64).ravel()]


def _run(args: list[str], cwd: str) -> None:
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=900)
    if result.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{result.stderr[-3000:]}")


def golden(method: str, work: str) -> dict:
    data_dir, model_dir = os.path.join(work, "data"), os.path.join(work, "run")
    export_dir = os.path.join(work, "export")
    _run([f"{method}_tf.train", *SYNTHETIC, "--data_dir", data_dir, *COMMON,
          *METHOD_FLAGS[method], "--model_dir", model_dir], work)
    _run([f"{method}_tf.export", "--model_dir", model_dir, "--export_dir", export_dir], work)

    from common.training.saved_run import load_run
    from common.training.data import load_split_data
    from common.training.evaluate import compute_codes
    from common.export.loader import load_encoder

    data = load_split_data("synthetic", data_dir)
    run = load_run(method, model_dir, "best_map")
    relaxed = compute_codes(run.model, run.method, data.test_images[:8])
    pixels = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    served = load_encoder(export_dir)(pixels)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        report = json.load(f)
    with open(os.path.join(model_dir, "history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    return {
        "method": method,
        "losses": [hexed([h["loss"], h["test_loss"]]) for h in history],
        "metrics": {slot: {"epoch": report[slot]["epoch"],
                           **{k: float(report[slot][k]).hex() for k in METRICS}}
                    for slot in ("last", "best_loss", "best_map")},
        "relaxed_codes": hexed(relaxed),
        "served_relaxed": hexed(served["relaxed"]),
        "served_packed": np.asarray(served["packed"]).astype(int).ravel().tolist(),
    }


if __name__ == "__main__":
    name, folder, out = sys.argv[1:4]
    os.makedirs(folder, exist_ok=True)
    with open(out, "w") as f:
        json.dump(golden(name, folder), f, indent=1, sort_keys=True)
