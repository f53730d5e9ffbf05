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
