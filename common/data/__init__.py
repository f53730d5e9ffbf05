"""Data in the original DDH/DCBH layout: safe reading, preprocessing, tf.data, TFDS."""

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
from common.data.pipeline import ArrayPipeline, epoch_order
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
