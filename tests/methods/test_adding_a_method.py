"""README "Adding a method", done by a test: a method package outside this repository
(settings, model and loss in two small modules, a three-line train command) and one
registration line (an entry point in its installed metadata) are all it takes to train it
from the command line, refuse its bad flags, evaluate and export its runs with the shared
commands, and find it in the registry.

The toy package and its ``.dist-info`` (the metadata ``pip install`` would write) are made
in a temporary folder put first on ``PYTHONPATH`` of fresh processes: nothing of this
checkout changes, and the registry finds the method exactly as it finds the project's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from checkout import ROOT

pytestmark = pytest.mark.slow  # three trainings of a tiny network in fresh processes

FILES = {
    "toy_tf/__init__.py": '"""A toy hashing method, added as README says."""\n',
    "toy_tf/settings.py": """
        from dataclasses import dataclass
        from typing import ClassVar

        from common.methods.settings import BITS, MethodSettings, setting


        @dataclass(frozen=True)
        class ToySettings(MethodSettings):
            name: ClassVar[str] = "toy"
            display_name: ClassVar[str] = "Toy"
            table_order: ClassVar[int] = 99
            method_class: ClassVar[str] = "toy_tf.method:Toy"

            num_bits: int = setting(12, "Code length in bits.", low=1, high=BITS)
            hidden_units: int = setting(16, "Units of the hidden layer.", low=1)
        """,
    "toy_tf/method.py": """
        import keras

        from common.methods.base import CODES, LOGITS, HashingMethod, sparse_cross_entropy
        from toy_tf.settings import ToySettings


        class Toy(HashingMethod):
            Settings = ToySettings

            def build_model(self, num_classes):
                images = keras.Input((32, 32, 3))
                hidden = keras.layers.Dense(self.hidden_units, activation="relu")(
                    keras.layers.Flatten()(images))
                codes = keras.layers.Dense(self.num_bits, activation="tanh", name=CODES)(hidden)
                logits = keras.layers.Dense(num_classes, name=LOGITS)(codes)
                return keras.Model(images, [logits, codes])

            def loss_terms(self, model, outputs, labels):
                return {"classification": sparse_cross_entropy(labels, outputs[LOGITS])}
        """,
    "toy_tf/train.py": """
        from common.cli.train_flags import method_command

        main, run = method_command("toy", __name__)

        if __name__ == "__main__":
            run()
        """,
    "toy_tf-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: toy-tf\nVersion: 0.1\n",
    "toy_tf-0.1.dist-info/entry_points.txt":
        "[face_hashing.methods]\ntoy = toy_tf.settings:ToySettings\n",
}
TINY = ["--dataset", "synthetic", "--synthetic_identities", "3",
        "--synthetic_train_per_identity", "4", "--synthetic_test_per_identity", "2",
        "--batch_size", "8", "--eval_every", "0", "--log_every_steps", "0"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def _run(plugin, *args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{plugin}{os.pathsep}{ROOT}", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_registry_finds_the_added_method_after_the_projects_own(plugin, tmp_path):
    result = _run(plugin, "-c", "from common.methods import registry; "
                  "print(','.join(registry.method_names()))", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = result.stdout.strip().split(",")
    assert names[-1] == "toy" and {"dcbh", "ddch", "ddh", "ddah", "dagh", "dfh"} <= set(names)


def test_its_flags_come_from_its_settings_and_bad_values_are_one_error_line(plugin, tmp_path):
    result = _run(plugin, "-m", "toy_tf.train", *TINY, "--hidden_units", "0",
                  "--model_dir", str(tmp_path / "run"), cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "--hidden_units" in errors[0]
    assert not (tmp_path / "run").exists()
    result = _run(plugin, "-m", "toy_tf.train", "--helpshort", cwd=tmp_path)
    assert "--hidden_units: Units of the hidden layer." in result.stdout
    assert "--num_bits: Code length in bits." in result.stdout


def test_it_trains_and_the_shared_commands_evaluate_and_export_it(plugin, tmp_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    result = _run(plugin, "-m", "toy_tf.train", *TINY, "--num_bits", "8", "--hidden_units",
                  "8", "--epochs", "2", "--data_dir", str(tmp_path / "data"),
                  "--model_dir", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2" in result.stdout
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["method"] == {"method": "toy", "num_bits": 8, "hidden_units": 8}
    result = _run(plugin, "-m", "common.cli.evaluate", "--model_dir", str(run_dir),
                  "--checkpoint", "last", "--output", str(tmp_path / "eval.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["map"] == json.loads((run_dir / "metrics.json").read_text())["last"]["map"]
    result = _run(plugin, "-m", "common.cli.export", "--model_dir", str(run_dir),
                  "--checkpoint", "last", "--export_dir", str(export_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (export_dir / "saved_model.pb").exists()
    info = json.loads((export_dir / "export_info.json").read_text())
    assert info["method"] == {"method": "toy", "num_bits": 8, "hidden_units": 8}
