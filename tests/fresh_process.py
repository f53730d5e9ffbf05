"""Serve a SavedModel in a process that never saw the Keras model or this package."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)

_SERVE = """
import sys, numpy as np, tensorflow as tf
export_dir, images_path, out_path = sys.argv[1:]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
out = serve(images=tf.constant(np.load(images_path)))
np.savez(out_path, **{k: v.numpy() for k, v in out.items()})
"""


def serve_in_fresh_process(export_dir, images: np.ndarray, work_dir) -> dict[str, np.ndarray]:
    """The ``serving_default`` outputs of ``export_dir`` on ``images``, computed in a new
    Python process with only TensorFlow imported."""
    images_path = os.path.join(str(work_dir), "images.npy")
    out_path = os.path.join(str(work_dir), "out.npz")
    np.save(images_path, images)
    subprocess.run([sys.executable, "-c", _SERVE, str(export_dir), images_path, out_path],
                   check=True, env=ENV, timeout=300)
    with np.load(out_path) as served:
        return {k: served[k] for k in served.files}


def assert_served_codes(served: dict[str, np.ndarray], relaxed: np.ndarray, atol: float) -> None:
    """The served outputs against ``relaxed``, the Keras model's relaxed codes in this process.

    The served graph runs in another process, where TensorFlow may fuse and oneDNN may
    pick other kernels (per CPU), so its relaxed codes equal the Keras ones only within
    ``atol``, and a code, their sign, can differ where the relaxed value lies within
    ``atol`` of 0. So: the relaxed codes agree within ``atol``; each served code is the sign
    (0 -> +1) of its own relaxed value, exactly; the codes agree with the Keras codes
    wherever the relaxed value is farther than ``atol`` from 0 (at least 90% of them);
    ``packed`` packs the served codes.
    """
    np.testing.assert_allclose(served["relaxed"], relaxed, rtol=0, atol=atol)
    codes = served["codes"]
    assert codes.dtype == np.int8 and codes.shape == relaxed.shape, (codes.dtype, codes.shape)
    np.testing.assert_array_equal(codes, np.where(served["relaxed"] >= 0, 1, -1))
    far = np.abs(relaxed) > atol
    assert far.mean() >= 0.9, far.mean()
    np.testing.assert_array_equal(codes[far], np.where(relaxed >= 0, 1, -1)[far])
    np.testing.assert_array_equal(served["packed"],
                                  np.packbits(codes > 0, axis=1, bitorder="little"))
