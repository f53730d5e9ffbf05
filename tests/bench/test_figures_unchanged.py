"""bench/figures_unchanged.py, run as a person would: the same code measures bit-identical
figures, and a changed default shows as a difference with exit code 1.

Both sides run on this CPU in the same way (same kernels, ``--deterministic``), so exact
equality is the right test here; a one-epoch DDH cell on 12 synthetic identities keeps
each side to a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from checkout import ROOT

pytestmark = pytest.mark.slow  # four processes that import TensorFlow and train

SCRIPT = os.path.join(ROOT, "bench", "figures_unchanged.py")
PACKAGES = ("common", "dcbh_tf", "ddch_tf", "ddh_tf", "ddah_tf", "dagh_tf", "dfh_tf")
DEFAULT = "quantization_weight: float = setting(0.01,"


def _copy_code(folder) -> str:
    for name in PACKAGES:
        shutil.copytree(os.path.join(ROOT, name), folder / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return str(folder)


def _run(tmp_path, other: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, "--against_dir", other, "--rows", "ddh",
                           "--epochs", "1", "--batch_size", "32", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_the_same_code_measures_the_same_figures(tmp_path):
    result = _run(tmp_path, _copy_code(tmp_path / "copy"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ddh: bit-identical" in result.stdout
    assert "every row bit-identical" in result.stdout


def test_a_changed_default_is_reported(tmp_path):
    copy = _copy_code(tmp_path / "copy")
    settings = os.path.join(copy, "ddh_tf", "settings.py")
    with open(settings, encoding="utf-8") as f:
        text = f.read()
    assert DEFAULT in text   # the line this test changes still reads as it did
    with open(settings, "w", encoding="utf-8") as f:
        f.write(text.replace(DEFAULT, "quantization_weight: float = setting(0.5,"))
    result = _run(tmp_path, copy)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "ddh: DIFFERENT (" in result.stdout and "losses" in result.stdout
    assert "rows that differ: ddh" in result.stdout


def test_relative_data_folders_reach_the_other_version(tmp_path):
    """The other version's cells run in its own folder: relative paths are made absolute
    first (a missing folder is then named as the user gave it, absolute)."""
    result = subprocess.run([sys.executable, SCRIPT, "--against_dir", str(tmp_path),
                             "--rows", "ddh", "--train_dir", "nowhere/train", "--test_dir",
                             "nowhere/test", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert f"the ddh cell of {ROOT} failed" in result.stderr
    assert os.path.join(ROOT, "nowhere", "train") in result.stderr


def test_bad_arguments_stop_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "--rows", "ddh"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "give exactly one of --against COMMIT and --against_dir FOLDER" in result.stderr
