"""Export never deletes what a person owns, never loses the previous export, and serves
only what it was trained on: uint8 (N, 32, 32, 3) pixels, never silently cast."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from checkout import ROOT
from common.export import folder as export_folder
from common.io import folder_swap
from common.export import writer as export
from common.export.folder import EXPORT_INFO, FORMAT, FORMAT_KEY, ExportBusyError, ExportDirError
from common.export.loader import load_encoder
from common.export.serving import ANY_SIZE_SIGNATURE, SIGNATURE
from common.export.writer import export_model
from common.errors import FolderChangedError
from common.io.faults import ENV as CRASH_ENV
from common.training.saved_run import load_run
from common.training.data import load_split_data
from common.training.loop import TrainConfig, train
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
HEX = "0123456789ab"  # a 12-hex token as the module names its own temporaries


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-epoch DCBH run (12 bits, narrow backbone) on 6 synthetic identities, loaded."""
    root = tmp_path_factory.mktemp("safety")
    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=dict(
        num_identities=6, train_per_identity=8, test_per_identity=3))
    model_dir = root / "runs" / "run"
    config = TrainConfig(epochs=3, model_dir=str(model_dir), batch_size=16, eval_every=0,
                         log_every_steps=0)
    train(DCBH(num_bits=12, code_length=3, width_multiplier=0.0625), data, config)
    run = load_run(DCBH, str(model_dir), "last")
    raw = np.random.default_rng(11).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    return model_dir, run, raw


def _export(trained, target, slot: str = "last") -> str:
    """Export the module's run to ``target``, recording ``slot`` in export_info.json."""
    _, run, _ = trained
    return export_model(run.model, run.normalization, str(target), run.codes_output,
                        info={"checkpoint": {"slot": slot}})


def _slot(target) -> str:
    with open(os.path.join(target, EXPORT_INFO)) as f:
        return json.load(f)["checkpoint"]["slot"]


def _snapshot(folder) -> dict:
    """Every entry below ``folder`` (and ``folder`` itself): kind, mode, size, mtime, sha256."""
    folder = str(folder)
    entries = {}
    for path in [folder] + [os.path.join(d, n) for d, ds, fs in os.walk(folder)
                            for n in ds + fs]:
        st = os.lstat(path)
        digest = None
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        entries[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return entries


def _refused(trained, target, match: str, watch=None) -> ExportDirError:
    """Assert exporting to ``target`` is refused with ``match`` and touches nothing in
    ``watch`` (default: ``target``'s parent folder, recursively)."""
    watch = str(watch or os.path.dirname(os.path.abspath(str(target))))
    before = _snapshot(watch)
    with pytest.raises(ExportDirError, match=match) as info:
        _export(trained, target)
    assert _snapshot(watch) == before
    return info.value


def test_export_refuses_a_run_folder_and_leaves_it_intact(trained):
    model_dir, _, _ = trained
    error = _refused(trained, model_dir,
                     r"not an export of this project: holds .*checkpoints/.*run_config\.json")
    assert str(model_dir) in str(error) and "choose an empty or new folder" in str(error)
    load_run(DCBH, str(model_dir), "last")  # still a whole run


def test_export_refuses_a_folder_of_runs(trained):
    model_dir, _, _ = trained
    _refused(trained, model_dir.parent, r"holds run/", watch=model_dir.parent.parent)


def test_export_refuses_the_current_directory(trained, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    _refused(trained, ".", "is the current directory", watch=tmp_path)
    _refused(trained, "", "is the current directory", watch=tmp_path)


def test_export_refuses_a_parent_of_the_current_directory(trained, tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    _refused(trained, "..", "contains the current directory", watch=tmp_path)
    _refused(trained, str(tmp_path / "a"), "contains the current directory", watch=tmp_path)


def test_export_refuses_the_filesystem_root(trained):
    with pytest.raises(ExportDirError, match="filesystem root|contains the current directory"):
        _export(trained, "/")


def test_export_refuses_a_file(trained, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"mine")
    _refused(trained, tmp_path / "model.bin", "is a file, not a folder")


@pytest.mark.parametrize("name", ["exp[1]", "back\\slash"])
def test_export_refuses_a_folder_tensorflow_could_not_load_back(trained, tmp_path, name):
    _refused(trained, tmp_path / name, "file pattern: the SavedModel could never be loaded")
    assert not (tmp_path / name).exists()


def test_export_refuses_a_symlink_even_to_a_previous_export(trained, tmp_path):
    _export(trained, tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "link")
    _refused(trained, tmp_path / "link", "is a symbolic link")


def test_export_refuses_a_previous_export_holding_a_user_file(trained, tmp_path):
    _export(trained, tmp_path / "exp")
    (tmp_path / "exp" / "notes.txt").write_text("my notes")
    (tmp_path / "exp" / "variables" / "backup.bin").write_bytes(b"x")
    _refused(trained, tmp_path / "exp", r"not an export of this project: holds notes\.txt, "
                                        r"variables/")


def test_export_refuses_a_folder_without_the_marker(trained, tmp_path):
    _export(trained, tmp_path / "exp")
    with open(tmp_path / "exp" / EXPORT_INFO, "w") as f:
        json.dump({"format": "someone-else/3"}, f)
    _refused(trained, tmp_path / "exp", f"no {EXPORT_INFO} with \"format\"")


def test_export_into_a_new_or_empty_folder(trained, tmp_path):
    _export(trained, tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    _export(trained, tmp_path / "empty")
    for target in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        with open(target / EXPORT_INFO) as f:
            assert json.load(f)[FORMAT_KEY] == FORMAT
    assert sorted(os.listdir(tmp_path)) == ["empty", "new"]
    assert os.listdir(tmp_path / "new") == ["deeper"]


@pytest.mark.parametrize("previous", [False, True], ids=["empty", "previous export"])
def test_a_file_written_into_the_target_during_the_export_survives(trained, tmp_path,
                                                                   monkeypatch, previous):
    """Issue 27: an export into an empty folder deleted a file a user wrote there while it
    ran. Now the swap is undone: the folder keeps the file (and a previous export), the
    command fails with one error, nothing of the new export is left behind."""
    target = tmp_path / "exp"
    target.mkdir()
    if previous:
        _export(trained, target, slot="old")
    real = export._write_export

    def user_writes_meanwhile(folder, *args, **kwargs):
        real(folder, *args, **kwargs)
        (target / "notes.txt").write_text("mine")

    monkeypatch.setattr(export, "_write_export", user_writes_meanwhile)
    with pytest.raises(FolderChangedError, match="notes.txt"):
        _export(trained, target)
    assert (target / "notes.txt").read_text() == "mine"
    if previous:
        assert _slot(target) == "old"
    else:
        assert os.listdir(target) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["exp"]


def test_export_replaces_a_previous_export(trained, tmp_path):
    _, _, raw = trained
    target = tmp_path / "exp"
    _export(trained, target, "last")
    _export(trained, target, "best_loss")
    assert _slot(target) == "best_loss"
    assert os.listdir(tmp_path) == ["exp"]  # no temporary, aside copy or lock left
    assert load_encoder(target)(raw)["codes"].shape == (5, 12)


def test_export_replaces_an_export_written_before_the_marker(trained, tmp_path):
    target = tmp_path / "exp"
    _export(trained, target, "last")
    with open(target / EXPORT_INFO) as f:
        legacy = json.load(f)
    del legacy[FORMAT_KEY]
    with open(target / EXPORT_INFO, "w") as f:
        json.dump(legacy, f)
    _export(trained, target, "best_loss")
    assert _slot(target) == "best_loss"


def test_export_without_atomic_exchange_replaces_a_previous_export(trained, tmp_path,
                                                                   monkeypatch):
    target = tmp_path / "exp"
    _export(trained, target, "last")
    monkeypatch.setattr(folder_swap, "_exchange", lambda a, b: False)
    _export(trained, target, "best_loss")
    assert _slot(target) == "best_loss"
    assert os.listdir(tmp_path) == ["exp"]


def test_export_refuses_while_another_export_to_the_same_folder_runs(trained, tmp_path):
    target = tmp_path / "exp"
    _export(trained, target, "last")
    in_progress = tmp_path / f".exp.tmp-{HEX}"  # the other export's temporary folder
    in_progress.mkdir()
    (in_progress / "saved_model.pb").write_bytes(b"half written")
    fd = os.open(tmp_path / ".exp.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = _snapshot(tmp_path)
        with pytest.raises(ExportBusyError, match="another export to this folder is running"):
            _export(trained, target, "best_loss")
        assert _snapshot(tmp_path) == before
    finally:
        os.close(fd)
    assert _slot(target) == "last"


def test_export_removes_only_its_own_stale_temporaries(trained, tmp_path):
    target = tmp_path / "exp"
    _export(trained, target, "last")
    own = [f".exp.tmp-{HEX}", f".exp.old-{HEX}", ".exp.tmp-ab_12xyz"]  # last: mkdtemp's
    for name in own:
        (tmp_path / name / "variables").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.txt").write_text("keep")
    others = {f".exp.tmp-{HEX}extra": "dir", f".other.tmp-{HEX}": "dir", ".old-abcd1234": "dir",
              ".exp.tmp-notes": "dir", "exp.backup": "dir", f".exp.tmp-{HEX[::-1]}": "file",
              f".exp.old-{HEX[::-1]}": "link"}
    for name, kind in others.items():
        if kind == "dir":
            (tmp_path / name).mkdir()
        elif kind == "file":
            (tmp_path / name).write_text("a file, not an export's folder")
        else:
            os.symlink(tmp_path / "mine", tmp_path / name)
    kept = {name: _snapshot(tmp_path / name) for name in [*others, "mine"]
            if others.get(name) != "link"}
    _export(trained, target, "best_loss")
    assert sorted(os.listdir(tmp_path)) == sorted(["exp", "mine", *others])
    for name, snapshot in kept.items():
        assert _snapshot(tmp_path / name) == snapshot, name
    assert os.readlink(tmp_path / f".exp.old-{HEX[::-1]}") == str(tmp_path / "mine")


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from_a").write_text("a")
    (tmp_path / "b").mkdir()
    if not folder_swap._exchange(str(tmp_path / "a"), str(tmp_path / "b")):
        pytest.skip("no renameat2(RENAME_EXCHANGE) on this OS or filesystem: fallback used")
    assert os.listdir(tmp_path / "b") == ["from_a"] and os.listdir(tmp_path / "a") == []


def _set_aside(target) -> str:
    """The state a kill between the fallback's two renames leaves: export aside, none in place."""
    parent = os.path.dirname(str(target))
    aside = os.path.join(parent, f".{os.path.basename(str(target))}.old-{HEX}")
    os.rename(target, aside)
    half = os.path.join(parent, f".{os.path.basename(str(target))}.tmp-{HEX[::-1]}")
    os.mkdir(half)
    return aside


def test_loading_puts_back_a_previous_export_left_aside(trained, tmp_path):
    _, _, raw = trained
    target = tmp_path / "exp"
    _export(trained, target, "last")
    expected = load_encoder(target)(raw)
    _set_aside(target)
    encoder = load_encoder(target)
    assert _slot(target) == "last"
    np.testing.assert_array_equal(encoder(raw)["codes"], expected["codes"])


def test_next_export_puts_back_a_previous_export_left_aside_first(trained, tmp_path,
                                                                   monkeypatch):
    target = tmp_path / "exp"
    _export(trained, target, "last")
    _set_aside(target)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _export(trained, target, "best_loss")
    assert _slot(target) == "last"  # restored before the failing export began
    assert os.listdir(tmp_path) == ["exp"]


_CRASHING_EXPORT = """
import sys
from common.export import folder as export_folder
from common.io import folder_swap
from common.training.saved_run import export_run
from dcbh_tf.method import DCBH
model_dir, export_dir, exchange = sys.argv[1:]
if exchange == "fallback":
    folder_swap._exchange = lambda a, b: False
export_run(DCBH, model_dir, export_dir, "best_loss")
"""


@pytest.mark.parametrize("exchange, point", [
    ("exchange", "export:partial"), ("exchange", "export:written"),
    ("exchange", "export:swapped"),
    ("fallback", "export:partial"), ("fallback", "export:written"),
    ("fallback", "export:aside"), ("fallback", "export:swapped"),
])
def test_kill_between_renames_never_loses_the_previous_export(trained, tmp_path, exchange,
                                                              point):
    model_dir, _, raw = trained
    target = tmp_path / "exp"
    _export(trained, target, "last")
    result = subprocess.run([sys.executable, "-c", _CRASHING_EXPORT, str(model_dir),
                             str(target), exchange], env=dict(ENV, **{CRASH_ENV: point}),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr

    new = point == "export:swapped"
    if point == "export:aside":  # the fallback's one gap: recovered by the next load/export
        assert not target.exists()
        assert any(export_folder._is_complete_export(p)
                   for p in export_folder._siblings(str(target), "old"))
    else:
        assert _slot(target) == ("best_loss" if new else "last")
    encoder = load_encoder(target)
    assert _slot(target) == ("best_loss" if new else "last")
    assert encoder(raw)["codes"].shape == (5, 12)

    _export(trained, target, "next")
    assert _slot(target) == "next"
    assert os.listdir(tmp_path) == ["exp"]  # no stale temporary or aside copy left


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_is_group_readable(trained, tmp_path, umask):
    target = tmp_path / "exp"
    old = os.umask(umask)
    try:
        _export(trained, target, "last")
        _export(trained, target, "best_loss")  # the replacing export too
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o777 & ~umask
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode) == 0o777 & ~umask
        for name in filenames:
            mode = stat.S_IMODE(os.stat(os.path.join(dirpath, name)).st_mode)
            assert mode & 0o440 == 0o440 and mode & umask == 0, (name, oct(mode))


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """One export of the module's run and its loaded ``serving_default``."""
    target = tmp_path_factory.mktemp("served") / "exp"
    _export(trained, target)
    return target, tf.saved_model.load(str(target))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_serving_signature_rejects_float_images(trained, served, dtype):
    _, _, raw = trained
    target, loaded = served
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        loaded.signatures[SIGNATURE](images=tf.constant(raw.astype(dtype)))
    with pytest.raises(ValueError, match=f"images are {np.dtype(dtype).name}.*uint8.*255"):
        load_encoder(target)(raw.astype(dtype) / 255)


def test_serving_signature_rejects_other_integer_images(trained, served):
    _, _, raw = trained
    target, loaded = served
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        loaded.signatures[SIGNATURE](images=tf.constant(raw.astype(np.int32)))
    with pytest.raises(ValueError, match="images are int32.*0..255.*astype"):
        load_encoder(target)(raw.astype(np.int32))


@pytest.mark.parametrize("shape, hint", [
    ((2, 64, 64, 3), "resize to 32x32"),
    ((32, 32, 3), r"without the batch axis: use x\[None\]"),
    ((2, 32, 32, 1), "grey images"),
    ((2, 3, 32, 32), "NHWC"),
])
def test_serving_signature_rejects_other_shapes(served, shape, hint):
    target, loaded = served
    images = np.zeros(shape, np.uint8)
    with pytest.raises(TypeError, match="Can not cast"):  # numpy: TensorFlow's spec check
        loaded.signatures[SIGNATURE](images=images)
    # A tensor passes TensorFlow's fallback; the graph's own check refuses it (a rank-3
    # tensor used to abort the process inside the convolution, a 64x64 batch was encoded).
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"images must be uint8 \(N, 32, 32, 3\).*got shape"):
        loaded.signatures[SIGNATURE](images=tf.constant(images))
    with pytest.raises(ValueError, match=rf"shape \({shape[0]}.*{hint}"):
        load_encoder(target)(images)


def test_serving_signature_encodes_an_empty_batch(served):
    _, loaded = served
    for name in (SIGNATURE, ANY_SIZE_SIGNATURE):
        out = loaded.signatures[name](images=tf.zeros([0, 32, 32, 3], tf.uint8))
        assert out["codes"].shape == (0, 12) and out["packed"].shape == (0, 2), name
        assert out["relaxed"].shape == (0, 12), name


@pytest.mark.parametrize("images", [[[0]], "pixels", None])
def test_load_encoder_rejects_what_is_not_an_array(served, images):
    target, _ = served
    with pytest.raises(ValueError, match="numpy array or a tf.Tensor"):
        load_encoder(target)(images)


def test_load_encoder_gives_the_signature_outputs(trained, served):
    _, _, raw = trained
    target, loaded = served
    encoder = load_encoder(target)
    assert encoder.num_bits == 12 and encoder.info[FORMAT_KEY] == FORMAT
    want = loaded.signatures[SIGNATURE](images=tf.constant(raw))
    for source in (raw, tf.constant(raw)):
        got = encoder(source)
        assert set(got) == {"codes", "packed", "relaxed"}
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value.numpy())
    empty = encoder(raw[:0])
    assert empty["codes"].shape == (0, 12) and empty["packed"].shape == (0, 2)
    assert empty["codes"].dtype == np.int8 and empty["packed"].dtype == np.uint8


def test_load_encoder_refuses_a_folder_that_is_not_an_export(trained, tmp_path):
    model_dir, _, _ = trained
    with pytest.raises(ExportDirError, match="not an export of this project"):
        load_encoder(model_dir)
    with pytest.raises(ExportDirError, match="no such folder"):
        load_encoder(tmp_path / "nowhere")


def test_any_size_signature_is_a_plain_resize_then_serving_default(served):
    _, loaded = served
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (4, 61, 47, 3), dtype=np.uint8)
    resized = tf.image.resize(big.astype(np.float32), (32, 32), method="bilinear",
                              antialias=True).numpy()
    resized = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    got = loaded.signatures[ANY_SIZE_SIGNATURE](images=tf.constant(big))
    want = loaded.signatures[SIGNATURE](images=tf.constant(resized))
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    small = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # 32x32 passes unchanged
    got = loaded.signatures[ANY_SIZE_SIGNATURE](images=tf.constant(small))
    want = loaded.signatures[SIGNATURE](images=tf.constant(small))
    np.testing.assert_array_equal(got["relaxed"].numpy(), want["relaxed"].numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        loaded.signatures[ANY_SIZE_SIGNATURE](images=tf.constant(big.astype(np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(N, H, W, 3\).*got shape"):
        loaded.signatures[ANY_SIZE_SIGNATURE](images=tf.constant(big[0]))


def _cli_export(model_dir, export_dir):
    return subprocess.run([sys.executable, "-m", "dcbh_tf.export", "--model_dir", str(model_dir),
                           "--export_dir", str(export_dir), "--checkpoint", "last"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def test_export_command_refuses_a_run_folder_with_one_error_line(trained):
    model_dir, _, _ = trained
    before = _snapshot(model_dir.parent)
    result = _cli_export(model_dir, model_dir)
    assert result.returncode == 2
    assert "error:" in result.stderr and "not an export of this project" in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(model_dir.parent) == before
