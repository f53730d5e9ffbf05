"""Golden outputs: every method's 2-epoch run, codes and export, bit for bit as recorded.

Recorded (``GOLDEN_RECORD=1 pytest tests/test_golden_outputs.py``) from the code before
the house's refactoring (issue 25, commit c874d72) into tests/data/golden/: the per-epoch
losses, the retrieval figures of the three slots, the relaxed codes of eight test faces
from ``best_map`` and the served export's codes of eight random images. Any later change
that is meant to keep behaviour must reproduce them exactly.

Why it can be exact on any x86-64 CPU: each run is a fresh process with oneDNN off
(``TF_ENABLE_ONEDNN_OPTS=0``: oneDNN picks kernels, and so summation orders, per CPU) and
one thread (TensorFlow's parallel reductions split work by thread count), with
``--deterministic``; what is left is Eigen's kernels, compiled for one instruction set.
Should another machine still round differently, the test says so and falls back to
comparing within a tolerance: continuous values to 1e-4 relative, codes only where the
relaxed value is at least 1e-3 away from the jump at 0 (DEVELOPERS.md).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from tests.golden_run import METHOD_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
PORTABLE = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1",
            "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
RECORD = os.environ.get("GOLDEN_RECORD") == "1"

pytestmark = pytest.mark.slow


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _unhex(values) -> np.ndarray:
    return np.array([float.fromhex(v) for v in values])


def _produce(method: str, tmp_path) -> dict:
    out = tmp_path / f"{method}.json"
    env = dict(os.environ, PYTHONPATH=ROOT, **PORTABLE)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "golden_run.py"),
                             method, str(tmp_path / method), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def _close(got: dict, want: dict) -> None:
    """The tolerance comparison for a machine that rounds differently (see module doc)."""
    for key in ("losses", "relaxed_codes", "served_relaxed"):
        np.testing.assert_allclose(_unhex(np.ravel(got[key])), _unhex(np.ravel(want[key])),
                                   rtol=1e-4, atol=1e-6, err_msg=key)
    relaxed = _unhex(want["served_relaxed"])
    far = np.abs(relaxed) >= 1e-3
    bits = lambda packed: np.unpackbits(np.array(packed, np.uint8), bitorder="little")  # noqa
    num = relaxed.size
    np.testing.assert_array_equal(bits(got["served_packed"])[:num][far],
                                  bits(want["served_packed"])[:num][far])


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
    _close(got, want)
    pytest.xfail(f"not bit-identical on {cpu_model()} (recorded on {recorded_on}), but "
                 "equal within the tolerance: this CPU rounds differently")
