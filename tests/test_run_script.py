"""run.sh routes its arguments as README and `./run.sh help` say.

The script is run for real, with VENV pointing at a fake environment whose `python` only
records the arguments it was given: routing is checked without installing or training.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from checkout import ROOT

RUN_SH = os.path.join(ROOT, "run.sh")


@pytest.fixture()
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A VENV that run.sh's setup takes as installed; its python logs each call's arguments."""
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    python.chmod(0o755)
    key = b"".join(Path(ROOT, name).read_bytes() for name in ("setup.cfg", "pyproject.toml"))
    (venv / ".face-hashing-installed").write_text(hashlib.sha256(key).hexdigest() + "\n")
    return venv, log


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(venv))
    return subprocess.run([RUN_SH, *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_flags_without_a_subcommand_go_to_the_main_jobs_training(fake_venv):
    venv, log = fake_venv
    result = _run(venv, "--epochs", "40")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert [call.split()[1] for call in calls] == ["dcbh_tf.train", "dcbh_tf.evaluate",
                                                   "dcbh_tf.export"]
    train = calls[0].split()
    assert train[-2:] == ["--epochs", "40"]  # after the main job's own --epochs 20: it wins
    assert "--epochs" not in calls[1] and "--epochs" not in calls[2]


def test_no_arguments_runs_the_main_job_with_its_settings(fake_venv):
    venv, log = fake_venv
    assert _run(venv).returncode == 0
    train = log.read_text().splitlines()[0].split()
    assert train[train.index("--epochs") + 1] == "20"
    assert train[train.index("--dataset") + 1] == "synthetic"


@pytest.mark.parametrize("args, name", [
    (["--model_dir", "runs/mine"], "model_dir"), (["--model_dir=runs/mine"], "model_dir"),
    (["--epochs", "2", "-dataset=folder"], "dataset"), (["--train_dir", "a"], "train_dir")])
def test_the_main_job_refuses_flags_that_would_train_another_run(fake_venv, args, name):
    """Its evaluation and export read MAIN_RUN: a training sent elsewhere would leave them
    scoring and exporting another run (once: the user's run trained, an older one exported)."""
    venv, log = fake_venv
    result = _run(venv, *args)
    assert result.returncode == 2
    assert f"error: the main job does not take --{name}" in result.stderr
    assert "MAIN_RUN" in result.stderr and not log.exists()


def test_the_main_jobs_folders_come_from_the_environment(fake_venv, tmp_path):
    venv, log = fake_venv
    env = dict(os.environ, VENV=str(venv), MAIN_RUN="runs/other", MAIN_EXPORT="exports/other")
    assert subprocess.run([RUN_SH], env=env, capture_output=True, timeout=60).returncode == 0
    train, evaluate, export = (call.split() for call in log.read_text().splitlines())
    assert train[train.index("--model_dir") + 1] == "runs/other"
    assert evaluate[evaluate.index("--model_dir") + 1] == "runs/other"
    assert export[export.index("--export_dir") + 1] == "exports/other"


def test_a_method_subcommand_runs_that_methods_module(fake_venv):
    venv, log = fake_venv
    assert _run(venv, "train", "ddch", "--epochs", "3").returncode == 0
    assert log.read_text().split() == ["-m", "ddch_tf.train", "--epochs", "3"]


@pytest.mark.parametrize("args, message", [
    (["nonsense"], "unknown subcommand: nonsense"),
    (["train", "nomethod"], "error: unknown method 'nomethod'"),
])
def test_an_unknown_subcommand_or_method_exits_2_and_runs_nothing(fake_venv, args, message):
    venv, log = fake_venv
    result = _run(venv, *args)
    assert result.returncode == 2 and message in result.stderr
    assert not log.exists()


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_prints_the_usage_and_runs_nothing(fake_venv, flag):
    venv, log = fake_venv
    result = _run(venv, flag)
    assert result.returncode == 0 and result.stdout.startswith("usage: ./run.sh")
    assert not log.exists()
