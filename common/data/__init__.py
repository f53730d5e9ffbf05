"""Data in the original DDH/DCBH layout: safe reading, preprocessing, tf.data, TFDS.

``ArrayPipeline`` and ``epoch_order`` are imported on first use: they need TensorFlow,
whose import takes seconds, and reading or writing pickles does not.
"""

from common.data.errors import DataFormatError, DataFormatWarning
from common.data.pickle_folder import (
    IMAGE_SIZE,
    ROW_WIDTH,
    check_test_labels,
    list_data_files,
    load_pickle_file,
    load_pickle_folder,
    write_pickle_folder,
)
from common.data.preprocess import Normalization, preprocess_split, to_nhwc, to_rows

__all__ = [
    "IMAGE_SIZE",
    "ROW_WIDTH",
    "ArrayPipeline",
    "DataFormatError",
    "DataFormatWarning",
    "Normalization",
    "check_test_labels",
    "epoch_order",
    "list_data_files",
    "load_pickle_file",
    "load_pickle_folder",
    "preprocess_split",
    "to_nhwc",
    "to_rows",
    "write_pickle_folder",
]

_LAZY = {"ArrayPipeline": "common.data.pipeline", "epoch_order": "common.data.pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'common.data' has no attribute {name!r}")
