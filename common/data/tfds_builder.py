"""TensorFlow Datasets builder for the original DDH/DCBH "32x32 vector folders".

Import this module (``import common.data.tfds_builder``) to register the builder
``face_hash_pickles``; it is deliberately not imported by ``common.data`` because
importing ``tensorflow_datasets`` is slow.

Python::

    import tensorflow_datasets as tfds
    import common.data.tfds_builder  # registers face_hash_pickles

    builder = tfds.builder("face_hash_pickles/youtube_faces")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir="/data/ddh", try_download_gcs=False))
    test = builder.as_dataset(split="test")  # queries, in the original row order

Command line (this module's own, see ``main``)::

    python -m common.data.tfds_builder --config facescrub --manual_dir /data/ddh
    python -m common.data.tfds_builder --config mine --train_folder db --test_folder q

TFDS's ``tfds build face_hash_pickles/facescrub --imports common.data.tfds_builder
--manual_dir DIR`` takes the same builder, but the 4.9.10 CLI needs apache_beam
installed just to start.

Design decisions:

* Pixels are stored losslessly as float32 NHWC (the originals are floats 0..255
  that need not be integral), so ``as_dataset`` gives back exactly
  ``to_nhwc(load_pickle_folder(folder)[0])``.
* Rows keep their original order: examples are keyed by their row index and
  ``disable_shuffling=True``. TFDS otherwise sorts examples by a hash of the key,
  which scrambles the order (even for a single shard). Reading an ordered dataset
  with ``shuffle_files=True`` raises unless
  ``tfds.ReadConfig(enable_ordering_guard=False)`` is passed; shuffle with
  ``ds.shuffle`` instead.
* When the config knows ``num_classes`` every label must be below it, else a
  ``DataFormatError`` naming the folder is raised before any of its rows are written
  (TFDS then removes the incomplete build); TFDS's own ClassLabel error would not
  say which folder is wrong.
* GCS / network: tensorflow-datasets 4.9.10 switches every GCS look-up off in code
  (``tensorflow_datasets.core.utils.gcs_utils._is_gcs_disabled = True``; there is no
  environment toggle), so constructing and preparing this builder makes no network
  request. Where GCS is enabled, TFDS probes ``gs://tfds-data`` for the dataset name
  when a builder is constructed (``DatasetInfo.initialize_from_bucket``, no switch)
  and, unless ``try_download_gcs=False``, in ``download_and_prepare``; pass that
  flag anyway, as ``main`` does.
* A custom config prepared once can be read back by name
  (``tfds.builder("face_hash_pickles/NAME", data_dir=...)`` gives a read-only
  builder from the written metadata).
* Folders are read with ``open``/``os``, so the manual dir must be local.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import ClassVar, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from common.data.errors import DataFormatError
from common.io import json_files
from common.io.atomic import write_json_atomic
from common.data.pickle_folder import CHANNELS, IMAGE_SIZE, list_data_files, load_pickle_folder
from common.data.preprocess import to_nhwc

_HOMEPAGE = "https://github.com/xjcvip007/DDH"

_CITATION = r"""@inproceedings{lin2017ddh,
  title     = {Discriminative Deep Hashing for Scalable Face Image Retrieval},
  author    = {Lin, Jie and Li, Zechao and Tang, Jinhui},
  booktitle = {Proceedings of the Twenty-Sixth International Joint Conference on
               Artificial Intelligence (IJCAI)},
  year      = {2017},
  url       = {https://www.ijcai.org/proceedings/2017/0315.pdf}
}
@inproceedings{jang2018dcbh,
  title     = {Deep Clustering and Block Hashing Network for Face Image Retrieval},
  author    = {Jang, Young Kyun and Jeong, Dong-ju and Lee, Seok Hee and Cho, Nam Ik},
  booktitle = {Asian Conference on Computer Vision (ACCV)},
  pages     = {325--339},
  year      = {2018},
  doi       = {10.1007/978-3-030-20876-9_21}
}
"""

_DESCRIPTION = """\
Face images in the layout of the original DDH / DCBH code: 32x32 RGB pixels
(float, 0..255, stored losslessly as float32 NHWC) with integer identity labels.
In the DDH protocol the 'test' split holds the queries and the 'train' split the
retrieval database. Examples keep the original row order (sorted file names, rows
in file order).
"""

_CHUNK_ROWS = 4096  # rows converted to NHWC at a time, to avoid a full second copy


@dataclasses.dataclass(eq=False)
class FaceHashPicklesConfig(tfds.core.BuilderConfig):
    """Which two folders of the manual dir make the splits, and the label range.

    Attributes:
        train_folder: folder (relative to the manual dir; an absolute path is used
            as is) holding the 'train' (database) split.
        test_folder: same for the 'test' (query) split.
        num_classes: number of identities, or None when unknown (labels are then
            plain int64 scalars and are not range-checked).
    """

    train_folder: str = "train"
    test_folder: str = "test"
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(
                f"num_classes must be a positive int or None, got {self.num_classes!r}")
        for field in ("train_folder", "test_folder"):
            if not getattr(self, field):
                raise ValueError(f"{field} must be a non-empty folder name")


class FaceHashPickles(tfds.core.GeneratorBasedBuilder):
    """DDH/DCBH pickle folders (YouTube Faces, FaceScrub, or any folder pair)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release: float32 NHWC images, original row order.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
The data are the original DDH "32x32 vector folders" distributed by the DDH
authors (https://github.com/xjcvip007/DDH; DCBH uses the same files). Each folder
holds pickle files of (x, y): x float (n, 3072) channel-first 32x32 RGB, y int labels.
Place the folders directly in the manual dir, which is
~/tensorflow_datasets/downloads/manual/ by default (<data_dir>/downloads/manual/),
or pass --manual_dir DIR (CLI) / tfds.download.DownloadConfig(manual_dir=DIR) (Python):

  <manual_dir>/train_vec_folder_32_32/   YouTube Faces train   (config youtube_faces)
  <manual_dir>/test_vec_folder_32_32/    YouTube Faces test
  <manual_dir>/train_folder_facescrub/   FaceScrub train       (config facescrub)
  <manual_dir>/test_folder_facescrub/    FaceScrub test
  <manual_dir>/train/, <manual_dir>/test/  any other pair      (config folder)

Other folder names: pass FaceHashPicklesConfig(name=..., train_folder=...,
test_folder=..., num_classes=...) as the builder's config.
"""
    BUILDER_CONFIGS: ClassVar[list[FaceHashPicklesConfig]] = [
        FaceHashPicklesConfig(
            name="youtube_faces",
            description="YouTube Faces as used by DDH/DCBH (1595 identities).",
            train_folder="train_vec_folder_32_32",
            test_folder="test_vec_folder_32_32",
            num_classes=1595,
        ),
        FaceHashPicklesConfig(
            name="facescrub",
            description="FaceScrub as used by DDH/DCBH (530 identities).",
            train_folder="train_folder_facescrub",
            test_folder="test_folder_facescrub",
            num_classes=530,
        ),
        FaceHashPicklesConfig(
            name="folder",
            description="Any train/ and test/ folder pair in the same layout "
                        "(e.g. synthetic data or a converted image set).",
            train_folder="train",
            test_folder="test",
            num_classes=None,
        ),
    ]
    # Keep the original row order (see the module docstring); a subclass may turn
    # this off to let TFDS shuffle by key hash at write time.
    DISABLE_SHUFFLING: ClassVar[bool] = True

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """The file defining the builder (TFDS's own fallback, taken directly).

        TFDS 4.9.10's ``code_path`` first touches ``importlib_resources``, a package
        it uses but does not declare for Python >= 3.9 (tensorflow/datasets#11212),
        so preparing any builder in a package fails without it.
        """
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        """Features from the config; metadata given here, not read from files.

        ``DatasetInfo`` is built directly rather than via ``dataset_info_from_configs``
        so that an unrelated README.md/CITATIONS.bib next to this module is never
        picked up as the dataset's description.
        """
        config: FaceHashPicklesConfig = self.builder_config
        if config.num_classes is None:
            label = tfds.features.Scalar(dtype=np.int64, doc="Identity label.")
        else:
            label = tfds.features.ClassLabel(num_classes=config.num_classes)
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=(IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32,
                    doc="32x32 RGB pixels, NHWC, float 0..255 as in the original files.",
                ),
                "label": label,
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=self.DISABLE_SHUFFLING,
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, np.ndarray | np.integer]]]]:
        """'train' (database) and 'test' (queries) from the two manual-dir folders.

        Both folders are checked before either is read, so a missing one fails fast
        with its expected path instead of after the other split was written.
        """
        config: FaceHashPicklesConfig = self.builder_config
        root = _manual_root(dl_manager)
        folders = {
            "train": os.path.join(root, config.train_folder),
            "test": os.path.join(root, config.test_folder),
        }
        for folder in folders.values():
            if not os.path.exists(folder):
                raise DataFormatError(
                    folder,
                    f"folder not found: config {config.name!r} expects it in the manual dir "
                    f"{root}. Place the data there or pass another manual_dir "
                    f"(see FaceHashPickles.MANUAL_DOWNLOAD_INSTRUCTIONS):\n"
                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}",
                )
            list_data_files(folder)  # DataFormatError if not a folder or holds no data file
        return {split: self._generate_examples(folder) for split, folder in folders.items()}

    def _generate_examples(
        self, folder: str
    ) -> Iterator[tuple[int, dict[str, np.ndarray | np.integer]]]:
        """Rows of ``folder`` keyed by row index, so sorting by key keeps their order.

        Reading goes through ``load_pickle_folder``, so the safe unpickler and all
        its validation apply unchanged.
        """
        x, y = load_pickle_folder(folder)
        num_classes = self.builder_config.num_classes
        if num_classes is not None and y.size and int(y.max()) >= num_classes:
            bad = int(np.argmax(y >= num_classes))
            raise DataFormatError(
                folder,
                f"label {int(y[bad])} (row {bad}) is out of range for config "
                f"{self.builder_config.name!r} with num_classes={num_classes}",
            )
        for start in range(0, len(y), _CHUNK_ROWS):
            images = to_nhwc(x[start:start + _CHUNK_ROWS])
            for offset, image in enumerate(images):
                index = start + offset
                yield index, {"image": image, "label": y[index]}


def _manual_root(dl_manager: tfds.download.DownloadManager) -> str:
    """The manual dir as a local path, even when TFDS refuses it.

    ``dl_manager.manual_dir`` raises a bare AssertionError when the directory is
    missing or empty; its configured path is then taken from the manager so the
    caller can name the exact folder it expected.
    """
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError:
        configured = getattr(dl_manager, "_manual_dir", None)
        if configured is None:
            raise
        return os.fspath(configured)


def prepare(config_name: str, manual_dir: str | None = None, data_dir: str | None = None,
            train_folder: str | None = None, test_folder: str | None = None,
            num_classes: int | None = None):
    """Prepare one config (a built-in one, or a custom folder pair) without the ``tfds``
    command line (which needs apache_beam); returns the prepared builder.

    A config prepared before is reused only if it was prepared from the same folders and
    files (recorded in :data:`SOURCE_FILE`): TFDS itself would hand back the old data.

    Raises:
        ValueError: a custom folder pair named like a built-in config, or an unknown config.
        DataFormatError: the data folders are missing or malformed (the file is named), or
            the config was prepared from other folders or files (delete it or rename).
    """
    builtin = {c.name: c for c in FaceHashPickles.BUILDER_CONFIGS}
    config: str | FaceHashPicklesConfig = config_name
    if any(v is not None for v in (train_folder, test_folder, num_classes)):
        if config_name in builtin:
            raise ValueError(f"--config {config_name} is built in; name a custom config "
                             "differently")
        config = FaceHashPicklesConfig(
            name=config_name, description="Custom folder pair.",
            train_folder=train_folder or "train", test_folder=test_folder or "test",
            num_classes=num_classes)
    elif config_name not in builtin:
        raise ValueError(f"unknown --config {config_name!r}: give --train_folder/--test_folder "
                         f"for a custom one, or pick one of {', '.join(builtin)}")
    builder = FaceHashPickles(config=config, data_dir=data_dir)
    root = manual_dir or os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
    source = _source_record(root, builder.builder_config)
    record = os.path.join(os.fspath(builder.data_dir), SOURCE_FILE)
    if os.path.isdir(os.fspath(builder.data_dir)):  # TFDS would reuse it without a word
        _check_same_source(os.fspath(builder.data_dir), record, source)
        return builder
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False))
    write_json_atomic(record, source)
    return builder


SOURCE_FILE = "face_hash_source.json"  # beside TFDS's files: what a prepare read


def _source_record(root: str, config: FaceHashPicklesConfig) -> dict:
    """The folders a prepare reads and each data file's name, size and time."""
    def folder_record(name: str) -> dict:
        folder = os.path.abspath(os.path.join(root, name))
        try:
            files = [[os.path.basename(f), info.st_size, info.st_mtime_ns]
                     for f in list_data_files(folder) for info in [os.stat(f)]]
        except DataFormatError:
            files = None  # the prepare itself says what is wrong
        return {"folder": folder, "files": files}

    return {"train": folder_record(config.train_folder),
            "test": folder_record(config.test_folder), "num_classes": config.num_classes}


def _check_same_source(prepared: str, record: str, source: dict) -> None:
    """Refuse to pass off data prepared from other folders or files as this prepare's."""
    try:
        recorded = json_files.load(record)
    except FileNotFoundError:
        return  # prepared before the record existed: reused as TFDS does
    except ValueError:
        recorded = None
    if recorded == source:
        return
    changed = [split for split in ("train", "test")
               if not isinstance(recorded, dict) or recorded.get(split) != source[split]]
    what = (", ".join(f"{split} ({source[split]['folder']})" for split in changed)
            or "num_classes")
    raise DataFormatError(prepared, f"already prepared from other data: {what} differs from "
                                    "what it was prepared from (other folders, or files "
                                    "changed since). Delete this folder to prepare it again, "
                                    "or name another --config")


__all__ = ["FaceHashPickles", "FaceHashPicklesConfig", "prepare"]

if __name__ == "__main__":  # the command: common/cli/tfds_prepare.py
    import sys

    # This module is the builder's one registration: the command must not import it again.
    sys.modules.setdefault("common.data.tfds_builder", sys.modules[__name__])
    from common.cli.tfds_prepare import run

    run()
