"""TensorFlow's start-up notices are hidden (common.cli.tf_startup), real errors are not.

The real-TensorFlow checks run in fresh processes (each imports TensorFlow) whose
environment has neither ``TF_CPP_MIN_LOG_LEVEL`` nor ``FACE_HASHING_TF_STARTUP``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from checkout import ROOT
from common.cli import tf_startup
from common.cli.tf_startup import STARTUP_NOTICES, filter_startup_lines, quiet_tensorflow_startup

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", "FACE_HASHING_TF_STARTUP")}
CLEAN_ENV["PYTHONPATH"] = ROOT

# What TF 2.21 printed on stderr when imported on this CPU machine.
SAMPLE = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796143925.952445   11319 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796143925.952853   11319 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796143958.869944   11319 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796143929.079452   11319 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
# The same kind of notices on GPU machines (TF 2.15-2.21).
GPU_SAMPLE = """\
E0000 00:00:1796143925.952445   11319 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
E0000 00:00:1796143925.952445   11319 cuda_blas.cc:1375] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
2024-01-31 12:00:00.123456: E external/local_xla/xla/stream_executor/cuda/cuda_fft.cc:607] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
2024-01-31 12:00:00.123456: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: Could not find TensorRT
W0000 00:00:1796143925.952445   11319 computation_placer.cc:177] computation placer already registered. Please check linkage and avoid linking the same target more than once.
I0000 00:00:1796143925.952445   11319 cuda_executor.cc:1015] successful NUMA node read from SysFS had negative value (-1), but there must be at least one NUMA node, so returning NUMA node zero.
I0000 00:00:1796143925.952445   11319 gpu_device.cc:2022] Created device /job:localhost/replica:0/task:0/device:GPU:0 with 139343 MB memory:  -> device: 0, name: NVIDIA H200, pci bus id: 0000:19:00.0, compute capability: 9.0
"""
REAL = [
    "E0000 00:00:1796143925.952853   11319 dso_loader.cc:77] could not load dynamic library "
    "'libcudnn.so.9'; dlerror: libcudnn.so.9: cannot open shared object file\n",
    "W0000 00:00:1796143925.952853   11319 other.cc:1] oneDNN is fine, but this is another warning\n",
    "Traceback (most recent call last):\n",
    '  File "train.py", line 3, in <module>\n',
    "ImportError: libcudart.so.12: cannot open shared object file\n",
]


def notices_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if any(notice.match(line) for notice in STARTUP_NOTICES)]


def test_filter_removes_every_startup_notice():
    assert filter_startup_lines(SAMPLE) == ""
    assert filter_startup_lines(GPU_SAMPLE) == ""


def test_filter_keeps_everything_else_in_order():
    mixed = SAMPLE.splitlines(keepends=True)
    text = "".join([mixed[0], REAL[0], *mixed[1:3], *REAL[1:], *mixed[3:]]) + "no newline"
    assert filter_startup_lines(text) == "".join(REAL) + "no newline"
    assert filter_startup_lines("") == ""


@pytest.mark.parametrize("env", [{"TF_CPP_MIN_LOG_LEVEL": "0"}, {"TF_CPP_MIN_LOG_LEVEL": "1"},
                                 {"FACE_HASHING_TF_STARTUP": "show"}])
def test_opt_out_changes_nothing(monkeypatch, env):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = (list(sys.meta_path), logging.getLogger("tensorflow").level)
    quiet_tensorflow_startup()
    assert (list(sys.meta_path), logging.getLogger("tensorflow").level) == before
    assert os.environ.get("TF_CPP_MIN_LOG_LEVEL") == env.get("TF_CPP_MIN_LOG_LEVEL")


def run_python(code: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_the_explicit_import_filters_fd2_of_that_import_only(tmp_path):
    """A stand-in ``tensorflow`` package (fast): its notices go, its other lines stay; no
    import hook is installed, and an import elsewhere is untouched."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        import os, sys, types
        os.write(2, {"".join(SAMPLE.splitlines(keepends=True)[:5])!r}.encode())
        os.write(2, {REAL[0]!r}.encode())
        print("python warning during import", file=sys.stderr)
        listed = []
        config = types.SimpleNamespace(list_physical_devices=lambda: listed.append(1) or os.write(
            2, {SAMPLE.splitlines()[-1]!r}.encode() + b"\\n"))
        """))
    result = run_python("""
        import importlib.machinery, os, sys
        from common.cli import tf_startup
        ours = lambda: [f for f in sys.meta_path if type(f).__module__.startswith("common.")]
        tf_startup.quiet_tensorflow_startup()
        assert ours() == [] and "tensorflow" not in sys.modules
        tensorflow = tf_startup.import_tensorflow()
        assert tf_startup.import_tensorflow() is tensorflow and tensorflow.listed == [1]
        assert ours() == []
        assert type(tensorflow.__loader__) is importlib.machinery.SourceFileLoader
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
        os.write(2, b"E0000 00:00:1.2 3 cuda_platform.cc:52] failed call to cuInit: later\\n")
        print("done")
        """, dict(CLEAN_ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT])), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    # after the import fd 2 is the real stderr again: nothing is filtered any more
    assert result.stderr == (REAL[0] + "python warning during import\n"
                             "E0000 00:00:1.2 3 cuda_platform.cc:52] failed call to cuInit: later\n")


def test_a_plain_import_elsewhere_is_not_filtered(tmp_path):
    """Without the explicit import (a library, a test importing TensorFlow itself), the
    notices are TensorFlow's business: nothing of this module intercepts them."""
    package = tmp_path / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"import os\nos.write(2, {SAMPLE.splitlines(keepends=True)[1]!r}.encode())\n")
    result = run_python("""
        from common.cli import tf_startup
        tf_startup.quiet_tensorflow_startup()
        import tensorflow
        """, dict(CLEAN_ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT])), timeout=60)
    assert result.returncode == 0 and result.stderr == SAMPLE.splitlines(keepends=True)[1]


@pytest.mark.slow
def test_tensorflow_quiet_and_devices_still_configurable():
    """After the explicit import: no start-up notice, and TF's runtime is not initialised yet."""
    result = run_python("""
        from common.cli.tf_startup import import_tensorflow
        tf = import_tensorflow()
        from common.training.distribution import configure_cpu_devices
        configure_cpu_devices(2)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert len(tf.config.list_logical_devices("CPU")) == 2
        print(int(tf.constant(1)), strategy.num_replicas_in_sync >= 1)
        """, CLEAN_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 True\n"
    assert notices_in(result.stderr) == []
    assert result.stderr == ""


@pytest.mark.slow
def test_opt_out_shows_the_notices():
    """TF_CPP_MIN_LOG_LEVEL=0 shows TensorFlow's start-up as it is (FACE_HASHING_TF_STARTUP=show
    takes the same path: test_opt_out_changes_nothing). An entry point's stderr without the
    notices is checked by tests/ddh_tf/test_train.py::test_train_command_line."""
    result = run_python("""
        from common.cli.tf_startup import import_tensorflow
        tf = import_tensorflow()
        print(int(tf.constant(1)))
        """, dict(CLEAN_ENV, TF_CPP_MIN_LOG_LEVEL="0"))
    assert result.returncode == 0, result.stderr
    assert notices_in(result.stderr), result.stderr


def test_notices_are_precise():
    """Only the notices' messages: other lines at the same levels are kept."""
    for line in ("I0000 00:00:1.5 1 port.cc:153] something else",
                 "E0000 00:00:1.5 1 cuda_platform.cc:52] failed to load cuDNN",
                 "oneDNN custom operations are on."):
        assert not any(notice.match(line) for notice in STARTUP_NOTICES), line
    assert all(isinstance(n.pattern, str) for n in tf_startup.STARTUP_NOTICES)


@pytest.mark.slow  # writes the default synthetic set (4,500 images) and fits ITQ on it
def test_the_reproduce_command_prints_no_notice(tmp_path):
    """A table of baselines only (they run in the harness's process, which imports TensorFlow
    last, for the table's environment): its stderr holds the clean lines and no notice.
    Before, the harness imported Keras first, which imported TensorFlow unfiltered."""
    result = subprocess.run(
        [sys.executable, "-m", "common.reproduce", "--methods", "itq", "--bits", "8",
         "--data_dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=CLEAN_ENV, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert notices_in(result.stderr) == [], result.stderr
    assert "loaded " in result.stderr and "results: " in result.stdout
