"""The synthetic identity data set: layout, reproducibility, identity structure, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT as REPO
from common.synthetic import generator as synthetic
from common.data import load_pickle_folder, to_rows

K, TRAIN, TEST = 6, 4, 2  # small: the whole module must stay fast


@pytest.fixture(scope="module")
def data():
    return synthetic.generate_identity_dataset(K, TRAIN, TEST, seed=3)


def _file_bytes(folder):
    out = {}
    for split in ("train", "test"):
        for name in sorted(os.listdir(os.path.join(folder, split))):
            with open(os.path.join(folder, split, name), "rb") as f:
                out[f"{split}/{name}"] = f.read()
    return out


def test_arrays_shapes_dtypes_ranges_and_counts(data):
    train_x, train_y, test_x, test_y = data
    for x, y, per in ((train_x, train_y, TRAIN), (test_x, test_y, TEST)):
        assert x.dtype == np.float32 and x.shape == (K * per, 3072)
        assert y.dtype == np.int64 and y.shape == (K * per,)
        assert x.min() >= 0.0 and x.max() <= 255.0
        assert np.array_equal(x, np.round(x))  # 8-bit levels, like decoded images
        assert np.array_equal(np.bincount(y, minlength=K), np.full(K, per))
        assert not np.array_equal(y, np.sort(y))  # rows are shuffled, like the real sets


def test_rows_are_channel_first():
    x, y, _, _ = synthetic.generate_identity_dataset(2, 2, 1, seed=0)
    images = synthetic._render_identity(synthetic.identity_template(0, 0), 3,
                                        np.random.default_rng(0))
    assert images.shape == (3, 32, 32, 3)
    # row layout: all red values, then green, then blue (C, H, W)
    rows = to_rows(images)
    assert np.array_equal(rows[:, :1024].reshape(3, 32, 32), images[..., 0])
    assert x.shape == (4, 3072) and x.dtype == np.float32


def test_painting_in_windows_is_exact(monkeypatch):
    """Small parts are painted only in a window around them: that must not crop them."""
    # one identity per hair style, glasses type and with a beard
    wanted = {("hair_style", s) for s in range(5)} | {("glasses", g) for g in (1, 2, 3)}
    wanted.add(("beard", True))
    chosen = []
    for identity in range(200):
        template = synthetic.identity_template(0, identity)
        features = {("hair_style", template["hair_style"]), ("glasses", template["glasses"]),
                    ("beard", template["beard"] > 0)}
        if features & wanted:
            wanted -= features
            chosen.append((identity, template))
    assert not wanted
    for identity, template in chosen:
        monkeypatch.setattr(synthetic, "_WINDOWED", True)
        fast = synthetic._render_identity(template, 12, np.random.default_rng(identity))
        monkeypatch.setattr(synthetic, "_WINDOWED", False)
        full = synthetic._render_identity(template, 12, np.random.default_rng(identity))
        assert np.array_equal(fast, full), identity


def test_write_round_trip(tmp_path, data):
    meta = synthetic.write_synthetic_dataset(tmp_path, K, TRAIN, TEST, seed=3, rows_per_file=5)
    train_x, train_y, test_x, test_y = data
    x, y = load_pickle_folder(tmp_path / "train")
    assert np.array_equal(x, train_x) and np.array_equal(y, train_y)
    assert x.dtype == np.float32 and y.dtype == np.int64
    x, y = load_pickle_folder(tmp_path / "test")
    assert np.array_equal(x, test_x) and np.array_equal(y, test_y)
    assert len(os.listdir(tmp_path / "train")) == 5  # 24 rows, 5 per file
    with open(tmp_path / "meta.json", encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk == meta
    assert meta["synthetic"] is True and meta["seed"] == 3
    assert (meta["num_identities"], meta["train_images"], meta["test_images"]) == (K, 24, 12)


def test_byte_reproducible(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthetic.write_synthetic_dataset(tmp_path / name, K, TRAIN, TEST, seed=seed)
    a, b, c = (_file_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    meta_a, meta_b = ((tmp_path / n / "meta.json").read_bytes() for n in "ab")
    assert meta_a == meta_b


def test_identity_templates_do_not_depend_on_the_number_of_identities():
    """Adding identities keeps the earlier ones (only the row order changes)."""
    x_small, y_small = synthetic.generate_identity_dataset(2, 3, 1, seed=1)[:2]
    x_large, y_large = synthetic.generate_identity_dataset(4, 3, 1, seed=1)[:2]
    for label in (0, 1):
        rows_small = sorted(row.tobytes() for row in x_small[y_small == label])
        rows_large = sorted(row.tobytes() for row in x_large[y_large == label])
        assert rows_small == rows_large


def test_identity_structure_is_learnable_but_images_vary():
    k = 10
    train_x, train_y, test_x, test_y = synthetic.generate_identity_dataset(k, 8, 4, seed=0)

    def features(x):  # per-image standardised pixels: removes global gain/offset
        x = x.astype(np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        return x / (x.std(axis=1, keepdims=True) + 1e-6)

    f_train, f_test = features(train_x), features(test_x)
    means = np.stack([f_train[train_y == label].mean(axis=0) for label in range(k)])
    dist = ((f_test[:, None, :] - means[None]) ** 2).sum(axis=-1)
    accuracy = np.mean(dist.argmin(axis=1) == test_y)
    assert accuracy > 3.0 / k, f"nearest-class-mean accuracy {accuracy:.2f}, chance {1 / k:.2f}"

    for label in range(k):  # images of one identity differ
        rows = train_x[train_y == label]
        assert rows.std(axis=0).mean() > 5.0
    # no test image is a copy (or near copy) of a train image
    gaps = np.abs(test_x[:, None, :] - train_x[None]).mean(axis=-1)
    assert gaps.min() > 3.0


def test_api_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="num_identities"):
        synthetic.generate_identity_dataset(0, 4, 2, 0)
    with pytest.raises(ValueError, match="seed"):
        synthetic.generate_identity_dataset(2, 4, 2, -1)
    with pytest.raises(ValueError, match="rows_per_file"):
        synthetic.write_synthetic_dataset(tmp_path, 2, 1, 1, 0, rows_per_file=0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "common.synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_then_overwrites(tmp_path):
    out = str(tmp_path / "data")
    args = ["--out", out, "--num_identities", "3", "--train_per_identity", "2",
            "--test_per_identity", "1", "--seed", "4"]
    synthetic.write_synthetic_dataset(out, 3, 2, 1, seed=4)  # in-process: no start-up cost
    first = _file_bytes(out)
    assert sorted(first) == ["test/part_000.pkl", "train/part_000.pkl"]

    again = _cli(*args)  # refused before anything is generated or written
    assert again.returncode == 2, again.stderr
    assert "already holds a data set" in again.stderr and "--overwrite" in again.stderr
    assert _file_bytes(out) == first

    # The one full CLI run (it loads TensorFlow through common.data: seconds).
    replaced = _cli(*args[:-1], "5", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert out in replaced.stdout
    assert "train 6 images" in replaced.stdout and "test 3 images" in replaced.stdout
    assert _file_bytes(out) != first
    x, y = load_pickle_folder(os.path.join(out, "train"))
    expected_x, expected_y = synthetic.generate_identity_dataset(3, 2, 1, seed=5)[:2]
    assert np.array_equal(x, expected_x) and np.array_equal(y, expected_y)
    with open(os.path.join(out, "meta.json"), encoding="utf-8") as f:
        assert json.load(f)["seed"] == 5


@pytest.mark.parametrize("args, message", [
    (["--out", "x", "--num_identities", "0"], "num_identities"),
    (["--out", "x", "--test_per_identity", "-1"], "test_per_identity"),
    (["--num_identities", "2"], "--out is required"),
])
def test_cli_rejects_bad_flags(tmp_path, args, message):
    done = _cli(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "x").exists()
