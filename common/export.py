"""SavedModel export: raw uint8 pixels in, binary codes out.

The serving signature bakes in the train split's normalisation constants, so a
single image needs nothing else:

    images (N, 32, 32, 3) uint8
      -> float32, clip((x - mean) * (0.1 / (std + 1e-5)), -1, 1)   (the original's preprocessing)
      -> model in inference mode -> relaxed codes (float32)
      -> codes  int8  +-1, sign with 0 -> +1
      -> packed uint8 (N, ceil(bits / 8)), bit b of the code is bit (b % 8) of byte b // 8,
         least significant bit first (numpy ``packbits(bitorder="little")``; faiss's binary
         indexes read this layout), bit = 1 where the code is +1; padding bits are 0.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common.data.preprocess import SCALE, STD_EPSILON, Normalization

SIGNATURE = "serving_default"
EXPORT_INFO = "export_info.json"
KERAS_FILE = "model.keras"


def pack_codes(codes: tf.Tensor) -> tf.Tensor:
    """+-1 codes (N, bits) -> uint8 (N, ceil(bits/8)), least significant bit first."""
    bits = tf.cast(codes > 0, tf.int32)
    num_bits = bits.shape[-1]
    pad = (-num_bits) % 8
    if pad:
        bits = tf.pad(bits, [[0, 0], [0, pad]])
    groups = tf.reshape(bits, [-1, (num_bits + pad) // 8, 8])
    weights = tf.constant([1 << i for i in range(8)], tf.int32)
    return tf.cast(tf.reduce_sum(groups * weights, axis=-1), tf.uint8)


def pack_codes_numpy(codes: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`pack_codes` (for indexes built outside TensorFlow)."""
    return np.packbits(np.asarray(codes) > 0, axis=1, bitorder="little")


def serving_function(model: keras.Model, normalization: Normalization, codes_output: int):
    """The tf.function behind the serving signature."""
    mean = tf.constant(normalization.mean, tf.float32)
    scale = tf.constant(np.float32(SCALE / (normalization.std + STD_EPSILON)), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
    def serve(images):
        x = tf.clip_by_value((tf.cast(images, tf.float32) - mean) * scale, -1.0, 1.0)
        outputs = model(x, training=False)
        relaxed = tf.cast(outputs[codes_output], tf.float32)
        codes = tf.where(relaxed >= 0, tf.ones_like(relaxed, tf.int8), -tf.ones_like(relaxed, tf.int8))
        return {"codes": codes, "packed": pack_codes(codes), "relaxed": relaxed}

    return serve


def _replace_dir(tmp: str, target: str) -> None:
    """Move a finished ``tmp`` folder to ``target``; an existing target is replaced last."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(target))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_model(model: keras.Model, normalization: Normalization, export_dir: str,
                 codes_output: int, info: dict[str, Any] | None = None,
                 save_keras: bool = True) -> str:
    """Write a SavedModel (and the ``.keras`` model) to ``export_dir``.

    Everything is written into a temporary sibling folder first and renamed into place,
    so an interrupted export never leaves a half-written ``export_dir``.

    Args:
        model: the trained functional model (preprocessed images -> outputs).
        normalization: the TRAIN split's constants.
        export_dir: output folder (replaced if it exists).
        codes_output: index of the relaxed-codes output in the model's outputs.
        info: extra metadata stored in ``export_info.json`` (method, epoch, metrics...).
        save_keras: also save ``model.keras`` (preprocessed float images in).

    Returns:
        ``export_dir``.
    """
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name=SIGNATURE, fn=serving_function(model, normalization, codes_output))
        saved_model_dir = tmp
        archive.write_out(saved_model_dir, verbose=False)
        num_bits = int(model.outputs[codes_output].shape[-1])
        meta = {
            "signature": SIGNATURE,
            "inputs": {"images": "uint8 (N, 32, 32, 3) raw RGB pixels, NHWC"},
            "outputs": {"codes": "int8 (N, bits), +-1",
                        "packed": "uint8 (N, ceil(bits/8)), bit b -> byte b//8, bit b%8 (LSB first)",
                        "relaxed": "float32 (N, bits)"},
            "num_bits": num_bits,
            "normalization": {"mean": normalization.mean, "std": normalization.std,
                              "scale": SCALE, "std_epsilon": STD_EPSILON, "clip": [-1.0, 1.0]},
        }
        meta.update(info or {})
        if save_keras:
            model.save(os.path.join(tmp, KERAS_FILE))
        with open(os.path.join(tmp, EXPORT_INFO), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        _replace_dir(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir
