"""SavedModel export of a trained model: raw uint8 pixels in, binary codes out.

One job: write a whole export (SavedModel with the signatures of :mod:`common.export.serving`,
``model.keras``, ``export_info.json`` with the format marker) into a temporary folder and
swap it into ``export_dir`` under the rules of :mod:`common.export.folder` (never replace
what is not a previous export, never leave it missing after a kill). Loading from Python:
:func:`common.export.loader.load_encoder`. The names of those modules that callers used from
here before the split are re-exported.

Crash points (:func:`common.io.faults.crash_point`, for ``FACE_HASHING_CRASH_AT``):
``export:partial`` (SavedModel written, ``model.keras``/``export_info.json`` not yet),
``export:written`` (temporary folder complete, nothing swapped), ``export:aside`` and
``export:swapped`` (in :func:`common.export.folder.put_in_place`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras

from common.io import interrupts
from common.io.atomic import make_temp_dir
from common.data.preprocess import SCALE, STD_EPSILON, Normalization
from common.export.folder import (EXPORT_INFO, FORMAT, FORMAT_KEY, KERAS_FILE, check_export_dir,
                                  export_lock, export_owns, put_in_place, recover_locked,
                                  remove_stale)
from common.io.folder_swap import discard_or_keep, fsync_tree
from common.io.faults import crash_point
from common.export.serving import (ANY_SIZE_SIGNATURE, SIGNATURE, any_size_serving_function,
                                   serving_function)


def _export_meta(model: keras.Model, normalization: Normalization, codes_output: int,
                 info: dict[str, Any] | None) -> dict[str, Any]:
    """The content of ``export_info.json`` (the format marker cannot be overridden)."""
    meta = {
        "signature": SIGNATURE,
        "signatures": {SIGNATURE: "uint8 (N, 32, 32, 3)",
                       ANY_SIZE_SIGNATURE: "uint8 (N, H, W, 3), plain bilinear resize to 32x32"},
        "inputs": {"images": "uint8 (N, 32, 32, 3) raw RGB pixels, NHWC"},
        "outputs": {"codes": "int8 (N, bits), +-1",
                    "packed": "uint8 (N, ceil(bits/8)), bit b -> byte b//8, bit b%8 (LSB first)",
                    "relaxed": "float32 (N, bits)"},
        "num_bits": int(model.outputs[codes_output].shape[-1]),
        "normalization": {"mean": normalization.mean, "std": normalization.std,
                          "scale": SCALE, "std_epsilon": STD_EPSILON, "clip": [-1.0, 1.0]},
    }
    meta.update(info or {})
    meta[FORMAT_KEY] = FORMAT
    return meta


def _write_export(folder: str, model: keras.Model, normalization: Normalization,
                  codes_output: int, info: dict[str, Any] | None, save_keras: bool) -> None:
    """Write a whole export into the (empty) ``folder`` and flush it to disk."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE,
                         fn=serving_function(model, normalization, codes_output))
    archive.add_endpoint(name=ANY_SIZE_SIGNATURE,
                         fn=any_size_serving_function(model, normalization, codes_output))
    archive.write_out(folder, verbose=False)
    crash_point("export:partial")
    if save_keras:
        model.save(os.path.join(folder, KERAS_FILE))
    with open(os.path.join(folder, EXPORT_INFO), "w", encoding="utf-8") as f:
        json.dump(_export_meta(model, normalization, codes_output, info), f, indent=2,
                  sort_keys=True)
    fsync_tree(folder)


def export_model(model: keras.Model, normalization: Normalization, export_dir: str,
                 codes_output: int, info: dict[str, Any] | None = None,
                 save_keras: bool = True) -> str:
    """Write a SavedModel (and the ``.keras`` model) to ``export_dir``.

    Everything is written into a temporary sibling folder first and swapped into place,
    so ``export_dir`` is always a complete export (see the module docstring for the rules).

    Args:
        model: the trained functional model (preprocessed images -> outputs).
        normalization: the TRAIN split's constants.
        export_dir: output folder: new, empty, or a previous export (which is replaced).
        codes_output: index of the relaxed-codes output in the model's outputs.
        info: extra metadata stored in ``export_info.json`` (method, epoch, metrics...).
        save_keras: also save ``model.keras`` (preprocessed float images in).

    Returns:
        ``export_dir`` (absolute).

    Raises:
        ExportDirError: ``export_dir`` is something else than the above (nothing written).
        ExportBusyError: another export to ``export_dir`` is running.
    """
    export_dir = check_export_dir(export_dir)
    os.makedirs(os.path.dirname(export_dir), exist_ok=True)
    # SIGINT/SIGTERM are honoured between the write and the swap, never inside TensorFlow's
    # SavedModel writer (common.io.interrupts): an interrupted export leaves the old one in place.
    with export_lock(export_dir), interrupts.deferred():
        recover_locked(export_dir)
        check_export_dir(export_dir)  # again: it may have changed before we held the lock
        remove_stale(export_dir)
        # .NAME.tmp-<12 hex>: the name remove_stale recognises as this export's own
        tmp = make_temp_dir(f".{os.path.basename(export_dir)}.tmp-", os.path.dirname(export_dir))
        try:
            _write_export(tmp, model, normalization, codes_output, info, save_keras)
            crash_point("export:written")
            interrupts.check()
            put_in_place(tmp, export_dir)
        except BaseException:
            discard_or_keep(tmp, export_dir, export_owns)  # ours only, whatever it holds now
            raise
    return export_dir
