"""Golden outputs: every method's 2-epoch run, codes and export, bit for bit as recorded.

Recorded (``GOLDEN_RECORD=1 pytest tests/integration/test_golden_outputs.py``) from the code before
the house's refactoring (issue 25, commit c874d72) into tests/data/golden/: the per-epoch
losses, the retrieval figures of the three slots, the relaxed codes of eight test faces
from ``best_map`` and the served export's codes of eight random images. Any later change
that is meant to keep behaviour must reproduce them exactly.

Re-recorded with oneDNN's SSE4.1 kernels pinned (below), by the code of commit a4531b4
(c874d72's, plus this test), on the same AMD EPYC: the first recording, with oneDNN's
default (AVX-512) kernels, held only where oneDNN picks those.

Why it is exact across x86-64 CPUs: each run is a fresh process with oneDNN's operations
off (``TF_ENABLE_ONEDNN_OPTS=0``: oneDNN picks kernels, and so summation orders, per CPU)
and one thread (TensorFlow's parallel reductions split work by thread count), with
``--deterministic``. That alone was not enough: Eigen's contractions (convolutions,
matrix products) still call oneDNN's sgemm, which picks its kernel per instruction set
(measured here: with ``ONEDNN_MAX_CPU_ISA=AVX2`` or ``SSE41`` no method kept its bits, and
after two epochs of training they were up to 2e4 x a 1e-4 tolerance apart: a comparison
within a tolerance is meaningless after training). So the runs also pin oneDNN to its
SSE4.1 kernels, which every CPU that runs TensorFlow has. What may be left (from Eigen's
blocking heuristic, not seen here): Eigen sizes the contraction blocks from the CPU's L1
cache (32 KB here), so a CPU with another L1 size may still round differently; there
the test says so and skips, since no tolerance would separate a changed bit from a
changed rounding.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from checkout import ROOT
from golden_run import METHOD_FLAGS

GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
PORTABLE = {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3"}
RECORD = os.environ.get("GOLDEN_RECORD") == "1"

pytestmark = pytest.mark.slow


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _produce(method: str, tmp_path) -> dict:
    out = tmp_path / f"{method}.json"
    env = dict(os.environ, PYTHONPATH=ROOT, **PORTABLE)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "golden_run.py"),
                             method, str(tmp_path / method), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.parametrize("method", sorted(METHOD_FLAGS))
def test_outputs_are_bit_identical_to_the_recorded_ones(method, tmp_path):
    got = _produce(method, tmp_path)
    path = os.path.join(GOLDEN, f"{method}.json")
    if RECORD:
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            json.dump({**got, "recorded_on": cpu_model()}, f, indent=1, sort_keys=True)
        return
    with open(path) as f:
        want = json.load(f)
    recorded_on = want.pop("recorded_on")
    if got == want:
        return
    if cpu_model() == recorded_on:
        assert got == want  # the machine they were recorded on: every bit, no excuse
    pytest.skip(f"not bit-identical on {cpu_model()} (recorded on {recorded_on}): this CPU "
                "rounds differently even with oneDNN's SSE4.1 kernels (module docstring)")
