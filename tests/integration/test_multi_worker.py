"""multi_worker training: two processes over localhost ports give the mirrored model.

Each worker is a fresh process with its own ``TF_CONFIG`` (a MultiWorkerMirroredStrategy
must exist before TensorFlow's first op, once per process) and one CPU device, so the
global batch is split over two replicas on two workers. The reference is the same
training with ``mirrored`` on two logical CPU devices of one process (one process per
method: two strategies' collectives would mix): the same two replicas, each given the
same chunk, computing with the same kernels, and two replicas' sums are exact in either
order (a + b = b + a). So the two agree to rounding: every tensor within
1e-5 + 1e-3 x its largest value, losses within 1e-5 relative (measured: bit for bit
but DDCH, whose tensors differ by 2% of that), on any CPU. Every process computes with
one thread, so that no kernel splits its sums by thread count.

Why not the one-device run, as before: over two epochs the mirrored run drifts from it
by discrete jumps (where a value lies within rounding of a kink, the sides take other
branches), and where oneDNN's kernels differ, so do the jumps: DDAH's attention
moments ended 1.5 x the former tolerance (1e-4 + 2e-2 x the largest value) apart with
AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2), 0.12 x with the default ones. That the mirrored
step is the one-device step is tests/common/training/test_distribution.py's to check, step by step.

Also checked: only the chief writes the run folder (the other worker's checkpoint
copies go to a private temporary folder, removed), and, through the command line, a
run whose worker is killed stops the chief with one error line and resumes from the
last epoch both saved when the two are started again.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.training.distribution import DistributionError, is_chief, read_tf_config

pytestmark = pytest.mark.slow  # trains models or starts processes

METHODS = ("dcbh", "ddch", "ddh", "ddah", "dagh")
EPOCHS = 2
BATCH = 12  # 40 images: 6 + 6 three times, then 2 + 2


def make_method(name):
    """A tiny instance of each method (its source also runs in the fresh processes)."""
    from dcbh_tf.method import DCBH
    from ddch_tf.method import DDCH
    from ddh_tf.method import DDH
    from ddah_tf.method import DDAH
    from dagh_tf.method import DAGH
    if name == "dagh":  # width 1/4, as DDAH, whose min-max attentions it reuses
        return DAGH(num_bits=12, width_multiplier=0.25)
    if name == "ddh":
        return DDH(num_bits=12)
    if name == "ddah":  # width 1/4: at 1/8 its 2-4 channel maps make more ties in its
        # min-max normalisations, where a rounding difference makes the gradient jump
        # (tests/common/training/test_distribution.py, the step test's docstring)
        return DDAH(num_bits=12, width_multiplier=0.25)
    cls = DCBH if name == "dcbh" else DDCH
    return cls(num_bits=12, width_multiplier=0.0625, center_reduction="sum")


_TRAIN = r"""
import json, os, sys
root, distribution, methods = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
epochs, batch = int(sys.argv[4]), int(sys.argv[5])
if distribution == "multi_worker":
    from common.training.distribution import make_strategy
    make_strategy("multi_worker")  # before TensorFlow's first op
elif distribution == "mirrored":
    from common.training.distribution import configure_cpu_devices
    configure_cpu_devices(2)
from common.training.data import load_split_data
from common.training.loop import TrainConfig, train
""" + "\n" + inspect.getsource(make_method) + r"""
worker = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": "one"}}'))["task"]["index"]
data = load_split_data("synthetic", os.path.join(root, f"data-{worker}"), synthetic_kwargs=dict(
    num_identities=8, train_per_identity=5, test_per_identity=2))
for name in methods:
    report = train(make_method(name), data, TrainConfig(
        epochs=epochs, model_dir=os.path.join(root, distribution, name), batch_size=batch,
        eval_every=0, log_every_steps=0, adam_epsilon=1.0, distribution=distribution))
    print(json.dumps({"method": name, "report": {k: report.get(k) for k in (
        "worker", "epochs_completed", "last")}}), flush=True)
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT, TF_NUM_INTRAOP_THREADS="1",
               **extra)
    env.pop("TF_CONFIG", None)
    env.pop("FACE_HASHING_CRASH_AT", None)
    env.update(extra)
    return env


def _start(root, distribution, methods, epochs, **env):
    return subprocess.Popen(
        [sys.executable, "-c", _TRAIN, str(root), distribution, ",".join(methods), str(epochs),
         str(BATCH)], env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process, timeout=600) -> list[dict]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _cluster(ports, index, crash=None) -> dict:
    tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                 "task": {"type": "worker", "index": index}}
    env = {"TF_CONFIG": json.dumps(tf_config)}
    if crash:
        env["FACE_HASHING_CRASH_AT"] = crash
    return env


def _worker_copies(tmp):
    """A worker's checkpoint copies left in its temporary folder (autograph's files aside)."""
    return [e for e in os.listdir(tmp) if e.startswith("face-hashing-worker-ckpt-")]


def _tensors(model_dir):
    import tensorflow as tf
    from common.runs.checkpoints import store as checkpoints

    index = checkpoints.read_index(model_dir)
    prefix = os.path.join(model_dir, "checkpoints", index["slots"]["last"]["dir"], "ckpt")
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
            if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _history(model_dir):
    with open(os.path.join(model_dir, "history.jsonl")) as f:
        return [json.loads(line) for line in f]


def _assert_same_run(one_dir, two_dir):
    """The runs in ``one_dir`` (mirrored) and ``two_dir`` agree to rounding (module doc)."""
    one, two = _tensors(one_dir), _tensors(two_dir)
    assert sorted(one) == sorted(two), set(one) ^ set(two)
    for key in one:
        if one[key].dtype.kind == "f":
            a, b = one[key].astype(np.float64), two[key]
            assert np.max(np.abs(a - b)) <= 1e-5 + 1e-3 * np.max(np.abs(a)), key
        else:
            np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    h1, h2 = _history(one_dir), _history(two_dir)
    assert [h["epoch"] for h in h2] == list(range(1, EPOCHS + 1))
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)
        for k in a["loss_parts"]:
            assert abs(a["loss_parts"][k] - b["loss_parts"][k]) <= 1e-5, (k, a, b)


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """Every method trained EPOCHS epochs on two mirrored devices (the reference runs)."""
    root = tmp_path_factory.mktemp("mirrored")
    for process in [_start(root, "mirrored", [name], EPOCHS) for name in METHODS]:
        _finish(process)
    return root


# ---------------------------------------------------------------------------- TF_CONFIG
def test_tf_config_is_read_and_checked():
    good = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert read_tf_config({"TF_CONFIG": json.dumps(good)}) == good
    assert not is_chief(good)
    assert is_chief(dict(good, task={"type": "worker", "index": 0}))
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                  "task": {"type": "worker", "index": 0}}
    assert not is_chief(with_chief)                      # a named chief outranks worker 0
    assert is_chief(dict(with_chief, task={"type": "chief", "index": 0}))
    assert is_chief(None)                                # one machine
    bad = {
        "": "not set",
        "{": "not valid JSON",
        "[]": "JSON object",
        '{"cluster": {}, "task": {}}': "must list the workers",
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}': "host:port",
        '{"cluster": {"ps": ["a:1"], "worker": ["a:2"]}, "task": {"type": "worker"}}':
            "'ps' is not used",
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}': "must name this process",
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}':
            "task index 1",
    }
    for raw, message in bad.items():
        with pytest.raises(DistributionError, match=message):
            read_tf_config({"TF_CONFIG": raw} if raw else {})


def test_multi_worker_needs_tf_config_and_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ddh_tf.train", "--distribution", "multi_worker",
         "--data_dir", str(tmp_path / "d"), "--model_dir", str(tmp_path / "r"), "--epochs", "1"],
        env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "TF_CONFIG environment variable, which is not set" in result.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------- end to end
def test_two_workers_train_every_method_as_mirrored_devices(tmp_path, mirrored_runs):
    for i in range(2):
        (tmp_path / f"tmp{i}").mkdir()
    ports = _free_ports(2)
    workers = [_start(tmp_path, "multi_worker", METHODS, EPOCHS, TMPDIR=str(tmp_path / f"tmp{i}"),
                      **_cluster(ports, i)) for i in range(2)]
    chief, other = (_finish(w) for w in workers)
    for name in METHODS:
        _assert_same_run(mirrored_runs / "mirrored" / name, tmp_path / "multi_worker" / name)
        run_config = json.loads((tmp_path / "multi_worker" / name / "run_config.json").read_text())
        assert run_config["replicas"] == 2
    assert [r["report"]["worker"] for r in other] == [{"type": "worker", "index": 1}] * len(METHODS)
    assert all(r["report"]["epochs_completed"] == EPOCHS for r in other)
    assert all(r["report"]["last"]["epoch"] == EPOCHS for r in chief)
    # the other worker's checkpoint copies went to its temporary folder and were removed
    assert _worker_copies(tmp_path / "tmp1") == []


def _cli_worker(tmp_path, ports, index, epochs, crash=None):
    """``python -m ddch_tf.train`` as worker ``index``, the settings of make_method("ddch")."""
    args = [sys.executable, "-m", "ddch_tf.train", "--distribution", "multi_worker",
            "--dataset", "synthetic", "--data_dir", str(tmp_path / f"data-{index}"),
            "--synthetic_identities", "8", "--synthetic_train_per_identity", "5",
            "--synthetic_test_per_identity", "2", "--num_bits", "12",
            "--width_multiplier", "0.0625", "--center_reduction", "sum",
            "--adam_epsilon", "1.0", "--batch_size", str(BATCH), "--epochs", str(epochs),
            "--eval_every", "0", "--model_dir", str(tmp_path / "multi_worker" / "ddch")]
    return subprocess.Popen(args, env=_env(TMPDIR=str(tmp_path / f"tmp{index}"),
                                           **_cluster(ports, index, crash)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_stops_the_chief_and_both_resume(tmp_path, mirrored_runs):
    """Through the command line: worker 1 dies (SIGKILL) right after saving epoch 1; the
    chief notices within seconds (TensorFlow's heartbeats), stops with one error line
    saying how to resume; both restart with the same command and finish epoch 2, ending
    as the uninterrupted mirrored run."""
    for i in range(2):
        (tmp_path / f"tmp{i}").mkdir()
    ports = _free_ports(2)
    chief = _cli_worker(tmp_path, ports, 0, EPOCHS)
    other = _cli_worker(tmp_path, ports, 1, EPOCHS, crash="train:saved@1")
    other.communicate(timeout=600)
    assert other.returncode == -signal.SIGKILL
    try:
        _, err = chief.communicate(timeout=180)
    finally:
        chief.kill()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert chief.returncode == 1 and len(errors) == 1, err[-3000:]
    assert "a worker of this multi_worker run stopped" in errors[0]
    assert "start every worker again with the same command" in errors[0]
    assert "Traceback" not in err
    model_dir = tmp_path / "multi_worker" / "ddch"
    assert [h["epoch"] for h in _history(model_dir)] == [1]

    ports = _free_ports(2)
    workers = [_cli_worker(tmp_path, ports, i, EPOCHS) for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert "resuming" in outputs[0][0] and "best_map" in outputs[0][0]   # the chief's report
    assert "worker worker 1: trained to epoch 2" in outputs[1][0]
    _assert_same_run(mirrored_runs / "mirrored" / "ddch", model_dir)
    assert _worker_copies(tmp_path / "tmp1") == []
