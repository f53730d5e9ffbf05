"""The TFDS builder for the original pickle folders (common.data.tfds_builder).

Every build runs offline and is checked against ``to_nhwc(load_pickle_folder(...))``
of the same folder: pixels bit for bit, labels exactly, rows in the original order
(sorted file names). Also covered: why ``disable_shuffling`` is needed (TFDS's
default key-hash order scrambles rows), multi-shard order, configs, the error paths,
the module's command line and that no GCS / network access is attempted.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import gcs_utils

from checkout import ROOT
from common.data import DataFormatError, load_pickle_folder, to_nhwc, write_pickle_folder
from common.data.pickle_folder import ROW_WIDTH
from common.data.tfds_builder import FaceHashPickles, FaceHashPicklesConfig


YTF_TRAIN, YTF_TEST = "train_vec_folder_32_32", "test_vec_folder_32_32"


# ----------------------------------------------------------------------------- helpers


def _pixels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Float pixels 0..255, mostly non-integral, with some integral and edge values."""
    x = rng.uniform(0.0, 255.0, size=(n, ROW_WIDTH)).astype(np.float32)
    x[:, ::5] = np.round(x[:, ::5])
    x[:, 1] = 0.0
    x[:, 2] = 255.0
    return x


def _write_folder(folder: Path, n: int, labels: np.ndarray, seed: int, rows_per_file: int) -> None:
    """``write_pickle_folder`` plus a file written last that sorts first.

    The extra file makes sorted-name order differ from creation (and usually
    listing) order, so the builder must really use the sorted order.
    """
    rng = np.random.default_rng(seed)
    write_pickle_folder(folder, _pixels(rng, n), labels[:n], rows_per_file=rows_per_file)
    extra_x = _pixels(rng, 3)
    with open(folder / "0_sorts_first.pkl", "wb") as f:
        pickle.dump((extra_x, labels[n:n + 3]), f, protocol=2)


def _expected(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_pickle_folder(folder)
    return to_nhwc(x), y


def _read(builder: tfds.core.DatasetBuilder, split: str, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a split, one by one, in TFDS's default read order."""
    images, labels = [], []
    for ex in tfds.as_numpy(builder.as_dataset(split=split, **kwargs)):
        images.append(ex["image"])
        labels.append(ex["label"])
    return np.stack(images), np.asarray(labels)


def _assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = got
    want_images, want_labels = want
    assert images.dtype == np.float32 and images.shape == want_images.shape
    # Bit-for-bit: float32 storage must be lossless.
    np.testing.assert_array_equal(images.view(np.uint32), want_images.view(np.uint32))
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, want_labels)


def _download_config(manual: Path, **kwargs) -> tfds.download.DownloadConfig:
    return tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False, **kwargs)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Fail loudly on any GCS probe or Python-level network connection."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network / GCS access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gcs_utils, "exists", refuse)
        mp.setattr(gcs_utils, "download_gcs_dataset", refuse)
        mp.setattr(gcs_utils, "download_gcs_folder", refuse)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(autouse=True)
def offline() -> Iterator[None]:
    with _offline():
        yield


# ----------------------------------------------------------------------------- data sets


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> dict[str, Path]:
    """`folder` config: train 23+3 rows in 6 files, test 9+3 rows in 4 files; built once."""
    root = tmp_path_factory.mktemp("folder")
    manual = root / "manual"
    labels = np.array([4, 0, 3, 3, 1, 2, 0, 4, 1, 2, 3, 0, 1, 4, 2, 2, 0, 3, 1, 4, 0, 1, 2, 3, 4,
                       0])
    _write_folder(manual / "train", 23, labels, seed=1, rows_per_file=5)
    _write_folder(manual / "test", 9, labels[5:], seed=2, rows_per_file=4)
    data_dir = root / "data"
    with _offline():
        builder = tfds.builder("face_hash_pickles/folder", data_dir=str(data_dir))
        builder.download_and_prepare(download_config=_download_config(manual))
    return {"manual": manual, "data_dir": data_dir}


@pytest.fixture(scope="module")
def ytf_data(tmp_path_factory) -> dict[str, Path]:
    """`youtube_faces` config on the original folder names, labels up to 1594; built once."""
    root = tmp_path_factory.mktemp("ytf")
    manual = root / "manual"
    labels = np.array([1594, 0, 17, 800, 1593, 17, 3, 1594, 0, 999, 5, 6, 1200, 7])
    _write_folder(manual / YTF_TRAIN, 11, labels, seed=3, rows_per_file=4)
    _write_folder(manual / YTF_TEST, 5, labels[2:], seed=4, rows_per_file=2)
    data_dir = root / "data"
    with _offline():
        builder = tfds.builder("face_hash_pickles/youtube_faces", data_dir=str(data_dir))
        builder.download_and_prepare(download_config=_download_config(manual))
    return {"manual": manual, "data_dir": data_dir}


def _builder(name: str, data: dict[str, Path]) -> tfds.core.DatasetBuilder:
    return tfds.builder(f"face_hash_pickles/{name}", data_dir=str(data["data_dir"]))


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("split", ["train", "test"])
def test_folder_config_round_trip(folder_data, split):
    builder = _builder("folder", folder_data)
    want = _expected(folder_data["manual"] / split)
    assert not np.array_equal(want[0], np.round(want[0]))  # some pixels are non-integral
    _assert_same(_read(builder, split), want)
    # The file written last sorts first: its rows come first, as in the original reader.
    with open(folder_data["manual"] / split / "0_sorts_first.pkl", "rb") as f:
        first_x, _ = pickle.load(f)
    np.testing.assert_array_equal(_read(builder, split)[0][:3], to_nhwc(first_x))


@pytest.mark.parametrize("split", ["train", "test"])
def test_youtube_faces_round_trip(ytf_data, split):
    folder = ytf_data["manual"] / (YTF_TRAIN if split == "train" else YTF_TEST)
    _assert_same(_read(_builder("youtube_faces", ytf_data), split), _expected(folder))


def test_tfds_load_gives_original_order(folder_data):
    """``tfds.load`` with its defaults (shuffle_files=False) reads rows in order."""
    for split in ("train", "test"):
        ds = tfds.load("face_hash_pickles/folder", split=split,
                       data_dir=str(folder_data["data_dir"]), download=False)
        images = np.stack([ex["image"] for ex in tfds.as_numpy(ds)])
        np.testing.assert_array_equal(images, _expected(folder_data["manual"] / split)[0])


def test_as_supervised_and_batched(folder_data):
    builder = _builder("folder", folder_data)
    images, labels = tfds.as_numpy(
        builder.as_dataset(split="test", as_supervised=True, batch_size=-1))
    want = _expected(folder_data["manual"] / "test")
    np.testing.assert_array_equal(images, want[0])
    np.testing.assert_array_equal(labels, want[1])


def test_split_sizes(folder_data, ytf_data):
    splits = _builder("folder", folder_data).info.splits
    assert splits["train"].num_examples == 26 and splits["test"].num_examples == 12
    assert splits["train"].num_shards == 1 and splits["test"].num_shards == 1
    splits = _builder("youtube_faces", ytf_data).info.splits
    assert splits["train"].num_examples == 14 and splits["test"].num_examples == 8


def test_features(folder_data, ytf_data):
    info = _builder("folder", folder_data).info
    image = info.features["image"]
    assert isinstance(image, tfds.features.Tensor)
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    label = info.features["label"]
    assert isinstance(label, tfds.features.Scalar) and label.dtype == np.int64
    assert info.supervised_keys == ("image", "label")
    assert info.disable_shuffling
    assert "lin2017ddh" in info.citation and "jang2018dcbh" in info.citation

    info = _builder("youtube_faces", ytf_data).info
    assert isinstance(info.features["label"], tfds.features.ClassLabel)
    assert info.features["label"].num_classes == 1595
    assert info.features["image"].shape == (32, 32, 3)
    assert _builder("facescrub", ytf_data).info.features["label"].num_classes == 530


# ----------------------------------------------------------------------------- order


def test_order_kept_across_shards(folder_data, tmp_path):
    """Several shards (and the default DownloadConfig, GCS probe on) still read in order."""
    builder = FaceHashPickles(config="folder", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(folder_data["manual"]), num_shards=3))
    assert builder.info.splits["train"].num_shards == 3
    _assert_same(_read(builder, "train"), _expected(folder_data["manual"] / "train"))


class _HashOrdered(FaceHashPickles, skip_registration=True):
    """TFDS's default: examples sorted by a hash of their key."""

    name = "face_hash_pickles_hash_ordered"
    DISABLE_SHUFFLING = False


def test_default_tfds_shuffling_scrambles_order(folder_data, tmp_path):
    """Why disable_shuffling: without it even a single shard comes back permuted."""
    builder = _HashOrdered(config="folder", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=_download_config(folder_data["manual"]))
    assert builder.info.splits["train"].num_shards == 1
    images, _ = _read(builder, "train")
    want = _expected(folder_data["manual"] / "train")[0]
    assert not np.array_equal(images, want)
    rows = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert rows(images) == rows(want)  # same rows, other order


def test_shuffle_files_refused_on_ordered_data(folder_data):
    builder = _builder("folder", folder_data)
    with pytest.raises(ValueError, match="ordered dataset"):
        builder.as_dataset(split="train", shuffle_files=True)
    read_config = tfds.ReadConfig(enable_ordering_guard=False)
    images, _ = _read(builder, "train", shuffle_files=True, read_config=read_config)
    assert len(images) == 26


# ----------------------------------------------------------------------------- configs


def test_custom_config(tmp_path):
    manual = tmp_path / "manual"
    labels = np.array([2, 0, 1, 2, 1, 0, 2])
    _write_folder(manual / "db", 4, labels, seed=5, rows_per_file=3)
    _write_folder(manual / "queries", 2, labels[1:], seed=6, rows_per_file=3)
    config = FaceHashPicklesConfig(name="mine", description="test", train_folder="db",
                                   test_folder="queries", num_classes=3)
    builder = FaceHashPickles(config=config, data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=_download_config(manual))
    assert builder.info.features["label"].num_classes == 3
    _assert_same(_read(builder, "train"), _expected(manual / "db"))
    _assert_same(_read(builder, "test"), _expected(manual / "queries"))
    # Reloading by name later gives a read-only builder from the prepared files.
    again = tfds.builder("face_hash_pickles/mine", data_dir=str(tmp_path / "data"))
    _assert_same(_read(again, "test"), _expected(manual / "queries"))


def test_config_validation():
    with pytest.raises(ValueError, match="num_classes"):
        FaceHashPicklesConfig(name="bad", num_classes=0)
    with pytest.raises(ValueError, match="train_folder"):
        FaceHashPicklesConfig(name="bad", train_folder="")
    with pytest.raises(ValueError, match="Cannot name a custom BuilderConfig"):
        FaceHashPickles(config=FaceHashPicklesConfig(name="folder", train_folder="x"))


# ----------------------------------------------------------------------------- errors


def test_missing_folder_names_expected_path(tmp_path):
    manual = tmp_path / "manual"
    _write_folder(manual / YTF_TRAIN, 3, np.arange(6), seed=7, rows_per_file=2)
    builder = FaceHashPickles(config="youtube_faces", data_dir=str(tmp_path / "data"))
    with pytest.raises(DataFormatError, match="folder not found") as err:
        builder.download_and_prepare(download_config=_download_config(manual))
    assert err.value.path == str(manual / YTF_TEST)
    assert "MANUAL_DOWNLOAD_INSTRUCTIONS" in str(err.value) and "--manual_dir" in str(err.value)
    assert not Path(builder.data_dir).exists()  # nothing half-prepared is left


def test_missing_manual_dir_names_expected_path(tmp_path):
    manual = tmp_path / "no_such_dir"
    builder = FaceHashPickles(config="folder", data_dir=str(tmp_path / "data"))
    with pytest.raises(DataFormatError, match="folder not found") as err:
        builder.download_and_prepare(download_config=_download_config(manual))
    assert err.value.path == str(manual / "train")


def test_empty_folder_raises(tmp_path):
    manual = tmp_path / "manual"
    _write_folder(manual / "train", 3, np.arange(6), seed=8, rows_per_file=2)
    (manual / "test").mkdir()
    builder = FaceHashPickles(config="folder", data_dir=str(tmp_path / "data"))
    with pytest.raises(DataFormatError, match="no data files") as err:
        builder.download_and_prepare(download_config=_download_config(manual))
    assert err.value.path == str(manual / "test")


def test_label_out_of_range_raises(tmp_path):
    manual = tmp_path / "manual"
    _write_folder(manual / YTF_TRAIN, 3, np.array([0, 1, 2, 3, 4, 5]), seed=9, rows_per_file=2)
    _write_folder(manual / YTF_TEST, 3, np.array([7, 1595, 2, 3, 4, 5]), seed=10, rows_per_file=2)
    builder = FaceHashPickles(config="youtube_faces", data_dir=str(tmp_path / "data"))
    with pytest.raises(DataFormatError, match=r"label 1595 \(row 4\).*num_classes=1595") as err:
        builder.download_and_prepare(download_config=_download_config(manual))
    assert err.value.path == str(manual / YTF_TEST)
    assert not Path(builder.data_dir).exists()


def test_corrupt_file_is_reported_by_the_safe_reader(tmp_path):
    manual = tmp_path / "manual"
    _write_folder(manual / "train", 3, np.arange(6), seed=11, rows_per_file=2)
    _write_folder(manual / "test", 3, np.arange(6), seed=12, rows_per_file=2)
    bad = manual / "test" / "part_000.pkl"
    bad.write_bytes(bad.read_bytes()[:100])
    builder = FaceHashPickles(config="folder", data_dir=str(tmp_path / "data"))
    with pytest.raises(DataFormatError, match="truncated") as err:
        builder.download_and_prepare(download_config=_download_config(manual))
    assert err.value.path == str(bad)


# ----------------------------------------------------------------------------- command line, import


def _command(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.data.tfds_builder", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))


@pytest.mark.slow
def test_the_command_prepares_and_reports_and_refuses_in_one_line(folder_data, tmp_path):
    data_dir, manual = tmp_path / "data", str(folder_data["manual"])
    done = _command("--config", "folder", "--manual_dir", manual, "--data_dir", str(data_dir),
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "face_hash_pickles/folder/1.0.0 train: 26 examples" in done.stdout
    builder = tfds.builder("face_hash_pickles/folder", data_dir=str(data_dir))
    _assert_same(_read(builder, "test"), _expected(folder_data["manual"] / "test"))
    for args, message in (
            (["--config", "facescrub", "--manual_dir", manual], "train_folder_facescrub: folder "
                                                                "not found"),
            (["--config", "youtube_faces", "--num_classes", "3"], "is built in"),
            (["--config", "unknown"], "unknown --config 'unknown'"),
            (["--num_classes", "1"], "--num_classes")):
        refused = _command(*args, "--data_dir", str(data_dir), cwd=tmp_path)
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert refused.returncode == 2 and len(errors) == 1 and message in errors[0], \
            refused.stderr
        assert "Traceback" not in refused.stderr


def test_common_data_does_not_import_tfds():
    code = ("import sys, common.data; "
            "assert 'tensorflow_datasets' not in sys.modules; "
            "assert 'common.data.tfds_builder' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_prepare_reuses_its_own_data_and_refuses_data_of_other_folders(tmp_path):
    """TFDS reuses a prepared config without a word: preparing config "mine" from other
    folders (or after its files changed) would hand back the old data as the new."""
    from common.data.tfds_builder import prepare

    manual = tmp_path / "manual"
    for name, seed in (("a", 1), ("b", 2), ("q", 3)):
        _write_folder(manual / name, 3, np.arange(6), seed=seed, rows_per_file=2)
    kwargs = dict(manual_dir=str(manual), data_dir=str(tmp_path / "data"), test_folder="q")
    first = prepare("mine", train_folder="a", **kwargs)
    assert first.info.splits["train"].num_examples == 6
    assert prepare("mine", train_folder="a", **kwargs).data_dir == first.data_dir  # reused
    with pytest.raises(DataFormatError, match=r"already prepared from other data: train "
                                              rf"\({re.escape(str(manual / 'b'))}\)") as err:
        prepare("mine", train_folder="b", **kwargs)
    assert err.value.path == os.fspath(first.data_dir)
    os.utime(manual / "q" / "part_000.pkl", ns=(1, 1))  # a file replaced since
    with pytest.raises(DataFormatError, match=r"test \(.*\) differs .* files changed since"):
        prepare("mine", train_folder="a", **kwargs)
    built = load_pickle_folder(manual / "a")[1]
    assert sorted(int(r["label"]) for r in tfds.as_numpy(first.as_dataset(split="train"))) == \
        sorted(built.tolist())
