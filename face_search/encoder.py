"""Faces to packed codes with a trained model, from an export or from a run folder.

Why both: an export is what a deployment ships; a run folder is what a researcher has
right after training. Both give the same codes (the export bakes in the run's train-split
normalisation; tested). An index records what the model makes of a fixed set of probe
images, so that faces are never compared with codes of another model (a retrained model
at the same path included): their relaxed outputs (``probe_relaxed``), compared within
:data:`PROBE_TOLERANCE`, and, for indexes made before that record, the SHA-256 of their
codes (``fingerprint``). Why the relaxed outputs: a code bit flips at 0, and two CPUs'
kernels (or the export's graph and the run's Keras model) differ by about 1e-6, so a probe
output near 0 could change the hash and refuse the very same model on another machine;
another model's outputs differ by far more than the tolerance.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import numpy as np

from face_search.errors import ModelPathError

BATCH = 256
_PROBE_SEED = 20_240_613
_PROBES = 32
RECORDED_PROBES = 8      # probes whose relaxed outputs an index records (8 x bits floats)
PROBE_TOLERANCE = 1e-3   # same model: outputs within this (kernels differ by ~1e-6)


def _probe_images() -> np.ndarray:
    """Fixed uint8 images (noise at several contrasts) whose codes identify a model."""
    rng = np.random.default_rng(_PROBE_SEED)
    noise = rng.random((_PROBES, 32, 32, 3))
    contrast = np.linspace(0.1, 1.0, _PROBES)[:, None, None, None]
    return np.clip(np.rint(127.5 + (noise - 0.5) * 255 * contrast), 0, 255).astype(np.uint8)


def model_kind(path: str) -> str:
    """"export" or "run" for the folder ``path``.

    Raises:
        ModelPathError: missing, or neither kind.
    """
    from common.export.folder import has_marker, recover_export
    from common.runs.run_config import RUN_CONFIG

    path = os.path.abspath(path)
    recover_export(path)  # a previous export a killed export left aside
    if not os.path.isdir(path):
        raise ModelPathError(f"{path}: no such folder (--model takes an export folder or a "
                             "training run folder)")
    if has_marker(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "export"
    if os.path.isfile(os.path.join(path, RUN_CONFIG)):
        return "run"
    raise ModelPathError(f"{path}: neither an export (export_info.json and saved_model.pb, "
                         f"written by an export command) nor a training run folder "
                         f"({RUN_CONFIG}, written by a train command)")


class CodeEncoder:
    """uint8 faces (N, 32, 32, 3) -> packed codes uint8 (N, ceil(bits/8)), LSB first."""

    def __init__(self, path: str, kind: str, num_bits: int,
                 encode: Callable[[np.ndarray], np.ndarray], details: dict[str, Any],
                 relax: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """``encode``: uint8 faces to packed codes; ``relax``: to the relaxed outputs the
        codes are the signs of (float (N, bits))."""
        self.path = path
        self.kind = kind
        self.num_bits = int(num_bits)
        self._encode = encode
        self._relax = relax
        self._details = details
        self._fingerprint: str | None = None
        self._probe_relaxed: np.ndarray | None = None

    @classmethod
    def from_path(cls, path: str, checkpoint: str = "best_map") -> "CodeEncoder":
        """Load an export folder or a run folder (``checkpoint``: the run's slot).

        Raises:
            ModelPathError: neither kind; RunFolderError / ExportDirError when damaged.
        """
        path = os.path.abspath(path)
        if model_kind(path) == "export":
            return cls._from_export(path)
        return cls._from_run(path, checkpoint)

    @classmethod
    def _from_export(cls, path: str) -> "CodeEncoder":
        from common.export.loader import load_encoder

        encoder = load_encoder(path)
        info = encoder.info
        details = {"method": (info.get("method") or {}).get("method"),
                   "checkpoint": (info.get("checkpoint") or {}).get("slot"),
                   "epoch": (info.get("checkpoint") or {}).get("epoch")}
        return cls(path, "export", encoder.num_bits, lambda x: encoder(x)["packed"], details,
                   relax=lambda x: encoder(x)["relaxed"])

    @classmethod
    def _from_run(cls, path: str, checkpoint: str) -> "CodeEncoder":
        from common.training.saved_run import load_run
        from common.training.evaluate import compute_codes

        run = load_run(None, path, checkpoint)  # the method the run records (the registry)
        num_bits = int(run.model.outputs[run.codes_output].shape[-1])

        def relax(faces: np.ndarray) -> np.ndarray:
            return compute_codes(run.model, run.method, run.normalization.apply(faces))

        def encode(faces: np.ndarray) -> np.ndarray:
            return np.packbits(relax(faces) >= 0, axis=1, bitorder="little")  # sign, 0 -> +1

        details = {"method": run.method.name, "checkpoint": checkpoint,
                   "epoch": run.record.get("epoch")}
        return cls(path, "run", num_bits, encode, details, relax=relax)

    def encode_faces(self, faces: np.ndarray) -> np.ndarray:
        """Packed codes of uint8 (N, 32, 32, 3) faces (ValueError for anything else)."""
        from common.export.loader import check_images

        faces = check_images(faces)
        if not len(faces):
            return np.zeros((0, -(-self.num_bits // 8)), np.uint8)
        parts = [self._encode(faces[i:i + BATCH]) for i in range(0, len(faces), BATCH)]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.uint8)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the codes of the fixed probe images (same model, same fingerprint)."""
        if self._fingerprint is None:
            codes = self.encode_faces(_probe_images())
            self._fingerprint = hashlib.sha256(codes.tobytes()).hexdigest()
        return self._fingerprint

    @property
    def probe_relaxed(self) -> np.ndarray | None:
        """Relaxed outputs (float64 (RECORDED_PROBES, bits)) of the first probe images, or
        None for an encoder made without ``relax``."""
        if self._probe_relaxed is None and self._relax is not None:
            probes = _probe_images()[:RECORDED_PROBES]
            self._probe_relaxed = np.asarray(self._relax(probes), np.float64)
        return self._probe_relaxed

    def describe(self) -> dict[str, Any]:
        """What an index records about the model that made its codes."""
        record = {"path": self.path, "kind": self.kind, "num_bits": self.num_bits,
                  "fingerprint": self.fingerprint, **self._details}
        if self.probe_relaxed is not None:
            record["probe_relaxed"] = [[float(f"{v:.6g}") for v in row]
                                       for row in self.probe_relaxed]
        return record

    def _same_model(self, record: dict[str, Any]) -> bool:
        """Whether this encoder makes the codes ``record`` describes (module docstring)."""
        recorded = record.get("probe_relaxed")
        mine = self.probe_relaxed
        if recorded is not None and mine is not None:
            try:
                recorded = np.asarray(recorded, np.float64)
            except (TypeError, ValueError):
                return False
            return recorded.shape == mine.shape and bool(
                np.all(np.abs(recorded - mine) <= PROBE_TOLERANCE))
        return record.get("fingerprint") == self.fingerprint

    def check_matches(self, record: dict[str, Any] | None, index_path: str) -> None:
        """ModelPathError unless this encoder makes the codes ``record`` describes."""
        if not record:
            return
        if int(record.get("num_bits", -1)) != self.num_bits:
            raise ModelPathError(f"{self.path}: makes {self.num_bits}-bit codes, the index "
                                 f"{index_path} holds {record.get('num_bits')}-bit codes")
        if not self._same_model(record):
            raise ModelPathError(
                f"{self.path}: not the model the index {index_path} was built with "
                f"({record.get('path')}): its codes differ, and codes of different models "
                "cannot be compared; rebuild the index with this model")


def encoder_for_index(index: Any, model: str | CodeEncoder | None, index_dir: str,
                      checkpoint: str | None = None) -> CodeEncoder:
    """The encoder for a GalleryIndex: ``model`` (a path or an encoder) or the model the
    index records, checked to make the index's codes (ModelPathError otherwise)."""
    if isinstance(model, CodeEncoder):
        encoder = model
    else:
        record = index.model or {}
        path = model or record.get("path")
        if not path:
            raise ModelPathError(f"{index_dir}: the index records no model; give --model")
        encoder = CodeEncoder.from_path(path, checkpoint or record.get("checkpoint") or "best_map")
    encoder.check_matches(index.model, index_dir)
    return encoder
