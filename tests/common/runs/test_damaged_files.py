"""Damaged files the project reads (issue 27, class 5): never an internal error.

The checkpoint index is rebuilt from the intact states whatever is wrong with it (nesting
that exhausts the stack, a wrong type anywhere the loop reads, a state folder that points
elsewhere), the damaged file kept beside it; a run config that cannot be trusted is one
error naming the file; a folder name TensorFlow cannot write is refused before anything
is written.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from checkout import ROOT
from common.io import json_files
from common.runs import run_config
from common.runs.checkpoints import store as checkpoints
from common.training.loop import TrainConfig, train
from common.training.saved_run import RunFolderError, evaluate_run
from dcbh_tf.method import DCBH
from tiny_training import synthetic_split

pytestmark = pytest.mark.slow  # trains models or starts processes

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    data = synthetic_split(root / "data", 4, 4, 2)
    model_dir = root / "run"
    train(DCBH(num_bits=8, code_length=2, width_multiplier=0.0625), data,
          TrainConfig(epochs=2, model_dir=str(model_dir), batch_size=8, eval_every=1,
                      log_every_steps=0))
    return data, model_dir


def _index(model_dir) -> dict:
    with open(os.path.join(model_dir, "checkpoints", "index.json")) as f:
        return json.load(f)


def _damage(index: dict, how: str) -> str:
    slot = index["slots"]["last"]
    if how == "deep":
        return DEEP
    if how == "epoch":
        slot["epoch"] = "two"
    elif how == "dir_elsewhere":
        slot["dir"] = "../../" + slot["dir"]
    elif how == "loss":
        slot["loss"] = [1]
    elif how == "metrics":
        index["slots"]["best_map"]["metrics"] = ["map", 0.5]
    elif how == "unknown_slot":
        index["slots"]["best_of_all"] = dict(slot)
    elif how == "keep":
        index["keep"] = {"e0": 1}
    elif how == "not_json":
        return json.dumps(index)[:-7]
    return json.dumps(index)


@pytest.mark.parametrize("how", ["deep", "epoch", "dir_elsewhere", "loss", "metrics",
                                 "unknown_slot", "keep", "not_json"])
def test_a_damaged_checkpoint_index_is_rebuilt_and_kept_aside(finished, tmp_path, how):
    _, original = finished
    model_dir = tmp_path / "run"
    shutil.copytree(original, model_dir)
    good = _index(model_dir)
    path = model_dir / "checkpoints" / "index.json"
    path.write_text(_damage(json.loads(path.read_text()), how))
    rebuilt = checkpoints.read_index(str(model_dir))
    assert "rebuilt_because" in rebuilt
    assert {s: r["dir"] for s, r in rebuilt["slots"].items()} == {
        s: r["dir"] for s, r in good["slots"].items()}
    checkpoints.CheckpointStore(str(model_dir))          # opening the store writes it
    assert glob.glob(str(path) + ".damaged-*") and _index(model_dir)["slots"]["last"]["epoch"] == 2


def test_deep_json_is_a_value_error_not_a_crash(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        json_files.load(str(path))


@pytest.mark.parametrize("content, reason", [
    (DEEP, "nested too deeply"), ('{"method": {"method": "dcbh"}, "num_classes": 4, '
                                  '"normalization": {"mean": NaN, "std": 1}}', "NaN"),
    ('{"method": {"method": "dcbh"}, "num_classes": 4}', "missing field 'normalization'"),
    ('{"method": {"method": "dcbh"}, "num_classes": 4, "normalization": {"mean": 1, "std": 1},'
     ' "dataset": [1]}', "'dataset' is not an object"),
    ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "unreadable"),
])
def test_a_damaged_run_config_is_one_error_naming_the_file(finished, tmp_path, content, reason):
    _, original = finished
    model_dir = tmp_path / "run"
    shutil.copytree(original, model_dir)
    (model_dir / run_config.RUN_CONFIG).write_bytes(content.encode("latin-1"))
    with pytest.raises(RunFolderError, match=reason) as info:
        evaluate_run(DCBH, str(model_dir))
    assert str(model_dir / run_config.RUN_CONFIG) in str(info.value)


def test_a_folder_name_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
    name = os.fsdecode(b"run\xff")
    result = subprocess.run(
        [sys.executable, "-m", "ddh_tf.train", "--model_dir", name, "--epochs", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1
    assert "run\\xff" in errors[0] and "not valid UTF-8" in errors[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("module, extra", [("dcbh_tf.evaluate", []),
                                           ("dcbh_tf.export", ["--export_dir", "out"])])
def test_reading_a_run_folder_whose_name_is_not_utf8_says_so(module, extra, tmp_path):
    """evaluate and export said "the checkpoint does not match this model" of such a folder
    (TensorFlow cannot open paths that are not UTF-8); now the name is the reason given."""
    name = os.fsdecode(b"run\xff")
    os.mkdir(tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-m", module, "--model_dir", name, *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "--model_dir run\\xff" in errors[0] and "not valid UTF-8" in errors[0], errors[0]
    assert os.listdir(tmp_path) == [name]
