"""bench/device_check.sh, the GPU readiness check, runs end to end on this CPU at tiny size.

The script itself is run (bash, as a person would), with $OUT set; each configuration
is a fresh process importing TensorFlow, so this takes about a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess

import pytest

from checkout import ROOT

pytestmark = pytest.mark.slow  # trains models or starts processes

SCRIPT = os.path.join(ROOT, "bench", "device_check.sh")
CONFIGS = ("float32", "mixed", "mirrored")
TINY = ["--width_multiplier", "0.0625", "--batch_size", "8", "--steps", "2", "--warmup", "1",
        "--num_classes", "10", "--eval_queries", "50", "--eval_database", "400",
        "--configs", ",".join(CONFIGS)]


def _module():
    spec = importlib.util.spec_from_file_location(
        "bench_device_check", os.path.join(ROOT, "bench", "device_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def device_check():
    return _module()


def test_project_hours_exact_numbers(device_check):
    p = device_check.project_hours(0.1, 2.0, 256)
    assert p["steps_per_epoch"] == 263  # ceil(67177 / 256)
    assert p["evaluations"] == 21  # after epochs 100..1900, then best_loss and last
    assert p["train_hours"] == pytest.approx(2000 * 263 * 0.1 / 3600)  # 14.6111 h
    assert p["eval_hours"] == pytest.approx(21 * 2.0 / 3600)
    assert p["hours"] == pytest.approx((52600 + 42) / 3600)
    small = device_check.project_hours(1.0, None, 100, epochs=10, train_images=1000,
                                       eval_every=5)
    assert (small["steps_per_epoch"], small["evaluations"]) == (10, 3)  # after epoch 5, final 2
    assert small["hours"] == pytest.approx(100 / 3600)
    assert device_check.count_evaluations(2000, 0) == 2  # only at the end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    env = dict(os.environ, OUT=str(out), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(["bash", SCRIPT, *TINY], cwd=str(out), env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    return out, proc


def test_script_runs_on_cpu_and_reports_every_config(tiny_run, device_check):
    out, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("device_check.json", "device_check.md", "device_check.log", "workers.log",
                 "nvidia_smi.txt"):
        assert (out / name).is_file(), name
    report = json.loads((out / "device_check.json").read_text())
    devices = report["devices"]
    assert devices["tensorflow"] and devices["keras"] and "build_info" in devices
    assert any(d["type"] == "CPU" for d in devices["physical_devices"])

    results = {r["config"]: r for r in report["configs"]}
    assert list(results) == list(CONFIGS)
    for r in results.values():
        assert (r.get("images_per_second") or 0) > 0 or r.get("reason") or r.get("error"), r
    assert results["float32"]["status"] == "ok"
    assert results["float32"]["replicas"] == 1
    assert results["float32"]["peak_gpu_mib"] is None  # no GPU
    assert results["mirrored"]["status"] == "ok"
    assert results["mirrored"]["replicas"] == 2  # two logical CPU devices

    ev = report["evaluation"]
    assert (ev["queries"], ev["database"], ev["bits"]) == (50, 400, 48) and ev["seconds"] >= 0
    for r in results.values():
        if r["status"] != "ok":
            continue
        assert r["images_per_second"] == pytest.approx(8 / r["step_seconds"])
        p = r["projection"]
        assert p["steps_per_epoch"] == math.ceil(67177 / 8)
        expected = (2000 * p["steps_per_epoch"] * r["step_seconds"]
                    + p["evaluations"] * ev["seconds"]) / 3600
        assert p["hours"] == pytest.approx(expected) and p["hours"] > 0

    table = (out / "device_check.md").read_text()
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith("| config")]
    assert [row.split("|")[1].strip() for row in rows] == list(CONFIGS)
    assert "| config | replicas |" in table
    assert table.strip() in proc.stdout.replace("\r", "")  # printed as well
    assert f"results in {out}" in proc.stdout


def _fake_worker(device_check, monkeypatch, tmp_path, code: str) -> None:
    """Make run_worker start ``code`` (a Python script) instead of the real worker."""
    script = tmp_path / "fake_worker.py"
    script.write_text(code)
    monkeypatch.setattr(device_check, "__file__", str(script))


def test_worker_without_result_is_an_error(device_check, tmp_path, monkeypatch):
    """A configuration whose process dies without a result is recorded as an error."""
    _fake_worker(device_check, monkeypatch, tmp_path,
                 "import sys\nprint('dying', file=sys.stderr)\nsys.exit(3)\n")
    result = device_check.run_worker("float32", 30, str(tmp_path / "workers.log"), [])
    assert result["status"] == "error" and "exited 3" in result["error"]
    assert "dying" in result["error"]
    assert "===== float32: exit 3" in (tmp_path / "workers.log").read_text()


def test_worker_that_hangs_is_killed_at_its_timeout(device_check, tmp_path, monkeypatch):
    _fake_worker(device_check, monkeypatch, tmp_path, "import time\ntime.sleep(60)\n")
    result = device_check.run_worker("mixed", 1, str(tmp_path / "workers.log"), [])
    assert result["status"] == "timeout" and result["process_seconds"] < 30


def test_worker_result_is_its_last_marked_line(device_check, tmp_path, monkeypatch):
    skipped = {"config": "mirrored_xla", "status": "skipped", "reason": "not supported (yet)"}
    _fake_worker(device_check, monkeypatch, tmp_path,
                 "import json\nprint('noise')\n"
                 f"print({device_check.RESULT_MARKER!r} + json.dumps({skipped!r}))\n")
    result = device_check.run_worker("mirrored_xla", 30, str(tmp_path / "workers.log"),
                                     ["--flag=1"])
    assert {k: result[k] for k in skipped} == skipped


def test_markdown_table_rows_skips_and_errors(device_check):
    ok = {"config": "float32", "status": "ok", "replicas": 1, "policy": "float32",
          "jit_compile": False, "images_per_second": 2560.0, "step_seconds": 0.1,
          "first_step_seconds": 3.0, "peak_gpu_mib": 1234.4,
          "projection": device_check.project_hours(0.1, 2.0, 256)}
    report = {
        "settings": {"num_bits": 48, "width_multiplier": 1.0, "num_classes": 530,
                     "batch_size": 256, "steps": 20, "warmup": 3},
        "devices": {"tensorflow": "2.x", "keras": "3.x", "build_info": {},
                    "gpus": [{"name": "/physical_device:GPU:0", "device_name": "NVIDIA H200"}]},
        "configs": [ok,
                    {"config": "mirrored_xla", "status": "skipped", "jit_compile": True,
                     "reason": "jit_compile is not supported | yet"},
                    {"config": "mixed", "status": "timeout", "error": "no result within 240 s"}],
    }
    table = device_check.markdown_table(report)
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 3 and "NVIDIA H200" in table
    assert rows[0].split(" | ")[1:9] == ["1", "float32", "no", "2,560.0", "100.0", "3.0",
                                         "1,234", "14.62"]
    assert "skipped: jit_compile is not supported / yet" in rows[1]  # no stray column
    assert rows[1].count("|") == rows[0].count("|") == rows[2].count("|")
    assert "timeout: no result within 240 s" in rows[2]
