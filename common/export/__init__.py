"""SavedModel export of a trained model: the serving graph, its folder, loading it back.

``writer`` writes an export, ``serving`` builds its signatures (raw uint8 pixels in, binary
codes out), ``folder`` decides which folder an export may replace, ``loader`` loads one
with strict input checks. The usual entry points are importable from here::

    from common.export import export_model, load_encoder

They are imported on first use, so ``import common.export`` costs no TensorFlow import.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "export_model": "common.export.writer",
    "load_encoder": "common.export.loader",
    "Encoder": "common.export.loader",
    "check_images": "common.export.loader",
    "ExportDirError": "common.export.folder",
    "ExportBusyError": "common.export.folder",
    "check_export_dir": "common.export.folder",
    "SIGNATURE": "common.export.serving",
    "ANY_SIZE_SIGNATURE": "common.export.serving",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'common.export' has no attribute {name!r}")
