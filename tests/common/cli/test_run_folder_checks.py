"""``evaluate`` and ``export`` refuse a --model_dir that is no run folder at once, before
TensorFlow is imported (common/cli/run_flags.py: check_model_dir): README promises flag
mistakes in a fraction of a second; the check used to come after TensorFlow's import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from checkout import ROOT

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)

# Runs a command's ``run()`` as ``python -m`` would, and says at exit (the runner ends the
# process through atexit's functions, then os._exit) whether TensorFlow was imported.
_RUN = textwrap.dedent("""
    import atexit, importlib, sys
    atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules))
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    importlib.import_module(module).run()
    """)


def _command(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN, module, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "afile").write_text("not a run\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run_config.json").write_text(json.dumps(
        {"method": {"method": "dcbh"}, "num_classes": 5,
         "normalization": {"mean": 100.0, "std": -1.0}}))
    return tmp_path


@pytest.mark.parametrize("module", ["common.cli.evaluate", "dcbh_tf.evaluate",
                                    "common.cli.export", "dcbh_tf.export"])
@pytest.mark.parametrize("name, message", [
    ("nowhere", "{path}: folder does not exist"),
    ("afile", "{path}: is a file, not a run folder"),
    ("empty", "{path}/run_config.json: not found; is {path} a training run folder"),
    ("damaged", "{path}/run_config.json: damaged normalization"),
])
def test_a_model_dir_that_is_no_run_folder_is_refused_before_tensorflow_loads(
        folders, module, name, message):
    path = str(folders / name)
    export = ["--export_dir", str(folders / "out")] if module.endswith("export") else []
    result = _command(module, "--model_dir", path, *export)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: " + message.format(path=path)), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout == "tensorflow imported: False\n"
    assert not (folders / "out").exists()


@pytest.mark.parametrize("module", ["common.cli.evaluate", "common.cli.export"])
def test_a_missing_model_dir_flag_is_refused_before_tensorflow_loads(module):
    result = _command(module)
    assert result.returncode == 2
    assert result.stderr == "error: --model_dir is required (the folder a train command wrote)\n"
    assert result.stdout == "tensorflow imported: False\n"
