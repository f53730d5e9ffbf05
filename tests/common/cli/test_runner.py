"""Every command answers a user's mistake with one ``error:`` line and exit code 2.

The README promises: bad flags, damaged or truncated checkpoints, malformed JSON,
unusable paths and inputs too large for the machine stop with ONE line on stderr,
starting with ``error:``, naming the flag or file and the reason; never a
traceback. Flag errors are reported before TensorFlow loads, so those cases are
cheap; the others share one tiny training run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from checkout import ROOT
from common.cli import runner

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
ENV.pop(runner.TRACEBACK_ENV, None)
# TensorFlow's start-up lines (even at level 3), absl log lines, TF's Python warnings.
NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog"
                   r"|WARNING:(tensorflow|absl):)")
TINY = ["--dataset", "synthetic", "--synthetic_identities", "3",
        "--synthetic_train_per_identity", "4", "--synthetic_test_per_identity", "2",
        "--batch_size", "8", "--width_multiplier", "0.0625", "--num_bits", "12",
        "--code_length", "3", "--log_every_steps", "0", "--eval_every", "0"]
# A run folder name with most characters a shell or a glob treats specially (a leading
# "-", so it is passed as --model_dir=...). "[...]" and "\" are tested in-process.
ODD_NAME = "-run ü名 %#:*?,\nend"


def _cli(module: str, args: list[str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _our_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's and absl's logging."""
    return [line for line in stderr.splitlines() if line.strip() and not NOISE.match(line)]


def _assert_one_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one ``error:`` line on stderr, the last, naming every fragment.

    The commands' plain log lines ("loaded ...: 12 images") may come before it: they are
    progress, on stderr as logging is; the failure is said once, at the end."""
    lines = _our_lines(result.stderr)
    assert result.returncode == code, result.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    assert errors[0].startswith("error: "), errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------ bad flags
BAD_FLAGS = [
    ("dcbh_tf.train", ["--epochs", "0"], "--epochs=0"),
    ("dcbh_tf.train", ["--epochs", "abc"], "--epochs=abc"),
    ("dcbh_tf.train", ["--learning_rate", "-1"], "--learning_rate must be > 0"),
    ("dcbh_tf.train", ["--center_weight", "inf"], "--center_weight must be a finite"),
    ("dcbh_tf.train", ["--nosuchflag"], "nosuchflag"),
    ("dcbh_tf.train", ["--hamming", "bogus"], "--hamming=bogus"),
    ("dcbh_tf.train", ["--num_bits", "1000000000"], "--num_bits must be <= 1024"),
    ("dcbh_tf.train", ["--code_length", "100000"], "--code_length must be <= 64"),
    ("dcbh_tf.train", ["--batch_size", "1000000"], "--batch_size must be <= 65536"),
    ("dcbh_tf.train", ["--width_multiplier", "1000"], "--width_multiplier must be <= 8"),
    ("dcbh_tf.train", ["--epochs", "1000000000000"], "--epochs must be <= 1000000"),
    ("dcbh_tf.train", ["--seed", str(2**32)], "--seed must be <= 4294967295"),
    ("dcbh_tf.train", ["--synthetic_identities", "1000000000"], "GiB"),
    ("ddch_tf.train", ["--hash_hidden_units", "1000000000"], "--hash_hidden_units must be <="),
    ("ddh_tf.train", ["--split_num", "1000000000"], "--split_num must be <= 64"),
    ("dcbh_tf.evaluate", ["--top_k", "1000000000000"], "--top_k must be <="),
    ("ddch_tf.evaluate", ["--hamming", "bogus"], "--hamming=bogus"),
    ("ddh_tf.export", ["--checkpoint", "newest"], "--checkpoint=newest"),
    ("common.reproduce", ["--bits", "12,100000"], "--bits must be integers from 1 to 1024"),
    ("common.reproduce", ["--bits", "abc"], "--bits must be integers"),
    ("common.reproduce", ["--nosuchflag"], "nosuchflag"),
    ("common.synthetic", ["--num_identities", "1000000000"], "--num_identities"),
    ("common.synthetic", ["--num_identities", "0"], "--num_identities=0"),
    ("common.synthetic", ["extra"], "unexpected arguments: extra"),
]


@pytest.mark.parametrize("module, args, fragment", BAD_FLAGS,
                         ids=[f"{m}{''.join(a)}"[:40] for m, a, _ in BAD_FLAGS])
def test_bad_flags_give_one_error_line_and_exit_2(module, args, fragment, tmp_path):
    result = _cli(module, [*args, "--out" if module.startswith("common.") else "--model_dir",
                           str(tmp_path / "x")], tmp_path, timeout=120)
    _assert_one_error(result, 2, fragment)
    assert not (tmp_path / "x").exists()  # refused before any work


@pytest.mark.parametrize("module, flag, listed", [
    ("dcbh_tf.train", "--helpshort", ["--model_dir", "--num_bits", "--code_length"]),
    ("common.synthetic", "--help", ["--out", "--num_identities", "--[no]overwrite"])])
def test_help_still_works_and_exits_0(module, flag, listed, tmp_path):
    """The module's own flags with their help, on stdout; nothing on stderr."""
    result = _cli(module, [flag], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in listed:
        assert f"  {name}:" in result.stdout, (name, result.stdout[:2000])
    assert not _our_lines(result.stderr)


# ------------------------------------------------------------ one shared training run
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A 1-epoch CLI run whose folder name is full of odd characters."""
    root = tmp_path_factory.mktemp("cli_errors")
    result = _cli("dcbh_tf.train", [*TINY, "--data_dir", str(root / "data"), "--epochs", "1",
                                    f"--model_dir={ODD_NAME}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / ODD_NAME


def _copy_run(run_folder, tmp_path, name: str = "run"):
    _, source = run_folder
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def _state_dir(model_dir, slot: str = "best_map"):
    with open(model_dir / "checkpoints" / "index.json", encoding="utf-8") as f:
        return model_dir / "checkpoints" / json.load(f)["slots"][slot]["dir"]


@pytest.mark.parametrize("module", ["dcbh_tf.evaluate", "dcbh_tf.export"])
def test_truncated_checkpoint_gives_one_error_line(module, run_folder, tmp_path):
    model_dir = _copy_run(run_folder, tmp_path)
    state = _state_dir(model_dir)
    data = next(p for p in state.iterdir() if p.name.startswith("ckpt.data"))
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    args = ["--model_dir", str(model_dir)]
    if module.endswith("export"):
        args += ["--export_dir", str(tmp_path / "export")]
    line = _assert_one_error(_cli(module, args, tmp_path), 2, str(state))
    assert "damaged" in line or "truncat" in line or "read" in line.lower()
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("content, reason", [(b'{"method": ', "line 1 column"),
                                             (b'\xff\xfe{"method"', "utf-8")])
def test_malformed_run_config_gives_one_error_line(content, reason, run_folder, tmp_path):
    model_dir = _copy_run(run_folder, tmp_path)
    (model_dir / "run_config.json").write_bytes(content)
    result = _cli("dcbh_tf.evaluate", ["--model_dir", str(model_dir)], tmp_path)
    _assert_one_error(result, 2, str(model_dir / "run_config.json"), reason)


@pytest.mark.parametrize("module, flag", [("dcbh_tf.train", "--model_dir"),
                                          ("dcbh_tf.export", "--export_dir"),
                                          ("dcbh_tf.evaluate", "--output")])
def test_model_dir_that_is_a_file_gives_one_error_line(module, flag, tmp_path):
    """A path flag naming a file (or a path under one): refused before TensorFlow loads."""
    (tmp_path / "afile").write_text("x")
    target = str(tmp_path / "afile") if flag == "--model_dir" else str(tmp_path / "afile" / "x")
    args = [flag, target]
    if flag != "--model_dir":
        args += ["--model_dir", str(tmp_path)]
    line = _assert_one_error(_cli(module, args, tmp_path, timeout=120), 2, flag,
                             str(tmp_path / "afile"))
    assert "not a folder" in line


def test_evaluate_on_a_file_as_model_dir_gives_one_error_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _cli("dcbh_tf.evaluate", ["--model_dir", str(tmp_path / "afile")], tmp_path)
    _assert_one_error(result, 2, str(tmp_path / "afile"))


def test_export_dir_tensorflow_cannot_load_is_refused(tmp_path):
    # --model_dir must look like a run folder: it is checked before TensorFlow loads
    (tmp_path / "run_config.json").write_text(json.dumps(
        {"method": {"method": "dcbh"}, "num_classes": 2,
         "normalization": {"mean": 100.0, "std": 50.0}}), encoding="utf-8")
    result = _cli("dcbh_tf.export", ["--model_dir", str(tmp_path), "--export_dir",
                                     str(tmp_path / "model[v2]")], tmp_path, timeout=120)
    _assert_one_error(result, 2, "model[v2]", "file pattern")  # refused before loading the run


# ------------------------------------------------------------------------ signals
def test_sigterm_during_training_is_an_interrupt(run_folder, tmp_path):
    """SIGTERM (a scheduler's stop) is handled as Ctrl-C: exit 130, one line, no
    half-written state, resumable."""
    root, _ = run_folder
    model_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcbh_tf.train", *TINY, "--data_dir", str(root / "data"),
         "--epochs", "100000", "--model_dir", str(model_dir)],
        cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:  # the epoch lines a person reads
            seen.append(line)
            if "epoch 2/" in line:  # a state is saved: training is under way
                break
        proc.send_signal(signal.SIGTERM)
        rest, errors = proc.communicate(timeout=120)
    finally:
        proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + rest, errors)
    _assert_one_error(result, runner.EXIT_INTERRUPTED, "interrupted", str(model_dir), "resume")
    checkpoints = os.listdir(model_dir / "checkpoints")
    assert not [e for e in checkpoints if e.startswith(".tmp-")], checkpoints
    with open(model_dir / "checkpoints" / "index.json", encoding="utf-8") as f:
        assert json.load(f)["slots"]["last"]["epoch"] >= 2


def test_sigterm_elsewhere_is_an_interrupt(capsys, monkeypatch):
    """The runner's handler, in-process: SIGTERM raises KeyboardInterrupt -> exit 130."""
    monkeypatch.setattr(runner, "_signal_name", None)  # restored afterwards
    previous = signal.getsignal(signal.SIGTERM)
    try:
        runner.install_sigterm_handler()

        def main(argv):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(500):  # the handler raises at the next bytecode
                time.sleep(0.01)

        with pytest.raises(SystemExit) as stop:
            runner.guarded(main)(["prog"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.code == runner.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted by SIGTERM\n"


_LATE = """
import atexit, os, signal, sys
from common.cli import runner

def main(argv):
    if sys.argv[1] == "late":  # a SIGTERM after main returned, while the process ends
        atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
    print("work done", flush=True)
    return int(sys.argv[2])

runner.run_main(main, ["prog"])
"""


@pytest.mark.parametrize("when, code, expected_exit, expected_err", [
    ("late", 0, runner.EXIT_INTERRUPTED,
     "error: interrupted by SIGTERM (after the work had finished: its outputs are complete)\n"),
    ("never", 0, 0, ""),
    ("never", 3, 3, ""),
    ("late", 3, 3, ""),  # a failure's own code and line stand
])
def test_a_signal_after_the_work_ends_as_an_interrupt(when, code, expected_exit, expected_err):
    """A SIGTERM that lands after main returned (here from an exit function, the moment a
    process spends in its teardown) used to meet the default action or an ignored
    exception: exit -15 or 0 and no line. Now it ends as every interrupt does."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", _LATE, when, str(code)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (
        expected_exit, "work done\n", expected_err)


# ----------------------------------------------------- the runner's last resort
def _raise_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"a": ')
    with open(path, encoding="utf-8") as f:
        json.load(f)


def _raise_os(tmp_path):
    open(tmp_path / "missing" / "file.txt", encoding="utf-8")


def _raise_memory(tmp_path):
    raise MemoryError("Unable to allocate 447. TiB for an array")


def _raise_bug(tmp_path):
    raise KeyError("slots")


@pytest.mark.parametrize("work, code, fragments", [
    (_raise_json, 2, ["broken.json: malformed JSON", "line 1 column 7"]),
    (_raise_os, 2, ["missing/file.txt: No such file or directory"]),
    (_raise_memory, 2, ["out of memory: Unable to allocate 447. TiB"]),
    (_raise_bug, 1, ["internal error: KeyError: 'slots'", runner.TRACEBACK_ENV]),
])
def test_escaping_errors_become_one_line(work, code, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(runner.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        runner.guarded(lambda argv: work(tmp_path))(["prog"])
    err = capsys.readouterr().err
    assert stop.value.code == code
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_traceback_only_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(runner.TRACEBACK_ENV, "1")
    with pytest.raises(SystemExit):
        runner.guarded(lambda argv: _raise_bug(tmp_path))(["prog"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: internal error")


def test_a_newline_in_a_name_stays_on_one_line(capsys):
    with pytest.raises(SystemExit):
        runner.fail("runs/a\nb: folder does not exist")
    assert capsys.readouterr().err == "error: runs/a\\nb: folder does not exist\n"


# ------------------------------------------------------------------ odd folder names
NAMES = ["with space", "ünïcødé-名前", "star*", "q?mark", "per%cent", "hash#", "co:lon",
         "com,ma", "-leading", "br[ack]et", "back\\slash", "new\nline", "x" * 255,
         "é" * 127 + "x"]


@pytest.fixture(scope="module")
def method_cls():
    from dcbh_tf.method import DCBH
    return DCBH


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("name", [pytest.param(n, id=ascii(n)[1:-1][:24]) for n in NAMES])
def test_any_folder_name_works_as_a_run_folder(name, run_folder, method_cls, tmp_path):
    """Save, restore, rebuild and export a run whose folder has ``name``."""
    import tensorflow as tf

    from common.training.saved_run import export_run, load_run
    from common.runs.checkpoints.store import CheckpointStore

    model_dir = _copy_run(run_folder, tmp_path, name)
    store = CheckpointStore(str(tmp_path / name / "scratch"), v=tf.Variable([1.0, 2.0]))
    store.save(["last"], {"epoch": 1})
    assert store.restore("last")["epoch"] == 1
    run = load_run(method_cls, str(model_dir), "last")
    assert run.record["epoch"] == 1
    os.remove(os.path.join(str(model_dir), "checkpoints", "index.json"))  # rebuilt: reads all
    assert load_run(method_cls, str(model_dir), "last").record["epoch"] == 1
    if name in (NAMES[0], NAMES[-2]):  # export costs seconds: two names are enough
        info = export_run(method_cls, str(model_dir), str(model_dir / "export"), "last")
        assert info["num_bits"] == 12 and (model_dir / "export" / "saved_model.pb").exists()


def test_odd_run_folder_name_works_on_the_command_line(run_folder):
    """Train (the fixture), evaluate and export with --model_dir=-run ü名 %#:*?,\\nend."""
    root, model_dir = run_folder
    result = _cli("dcbh_tf.evaluate", [f"--model_dir={ODD_NAME}", "--checkpoint", "last"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    figure = re.search(r"mAP (\d\.\d{4}) \| precision@", result.stdout)
    assert figure and 0.0 <= float(figure.group(1)) <= 1.0, result.stdout  # read and evaluated
    export_dir = root / "export ü %#"
    result = _cli("dcbh_tf.export", [f"--model_dir={ODD_NAME}", "--export_dir", str(export_dir)],
                  root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (export_dir / "saved_model.pb").exists()
