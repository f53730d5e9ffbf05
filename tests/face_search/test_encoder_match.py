"""Which model an index accepts: the one whose probe outputs match the recorded ones.

The encoders here are made of numpy functions (no TensorFlow), so the outputs are exact
and a flipped bit near 0 can be made on purpose: the check must accept the same model
whose probe code flipped at 0 (another CPU's kernels), refuse another model, and check
indexes recorded before ``probe_relaxed`` by their hash.
"""

from __future__ import annotations

import numpy as np
import pytest

from face_search.encoder import PROBE_TOLERANCE, RECORDED_PROBES, CodeEncoder
from face_search.errors import ModelPathError

BITS = 12
WEIGHTS = np.random.default_rng(0).normal(size=(32 * 32 * 3, BITS)) / 1000


def _encoder(weights: np.ndarray, shift: float = 0.0) -> CodeEncoder:
    def relax(faces: np.ndarray) -> np.ndarray:
        return (faces.reshape(len(faces), -1) / 255.0 - 0.5) @ weights + shift

    def encode(faces: np.ndarray) -> np.ndarray:
        return np.packbits(relax(faces) >= 0, axis=1, bitorder="little")

    return CodeEncoder("/models/m", "export", BITS, encode, {"method": "dcbh"}, relax=relax)


def test_the_record_holds_the_probes_relaxed_outputs():
    record = _encoder(WEIGHTS).describe()
    assert np.asarray(record["probe_relaxed"]).shape == (RECORDED_PROBES, BITS)
    assert len(record["fingerprint"]) == 64


def test_the_same_model_is_accepted_though_a_probe_bit_flipped_at_0():
    built = _encoder(WEIGHTS)
    record = built.describe()
    nearest = np.abs(built.probe_relaxed).min()
    # the same model on another machine: every output moved by a kernel-sized amount, one
    # of them across 0 (its code bit flips, so the hash of the codes changes)
    moved = _encoder(WEIGHTS, shift=-np.sign(built.probe_relaxed.flat[
        np.abs(built.probe_relaxed).argmin()]) * (nearest + 1e-7))
    assert moved.fingerprint != built.fingerprint
    assert nearest + 1e-7 < PROBE_TOLERANCE  # (the probes come that near 0 here)
    moved.check_matches(record, "/idx")  # accepted


def test_another_model_is_refused():
    record = _encoder(WEIGHTS).describe()
    other = _encoder(np.random.default_rng(1).normal(size=WEIGHTS.shape) / 1000)
    with pytest.raises(ModelPathError, match="not the model the index /idx was built with"):
        other.check_matches(record, "/idx")


def test_an_index_recorded_before_probe_outputs_is_checked_by_its_hash():
    built = _encoder(WEIGHTS)
    record = {k: v for k, v in built.describe().items() if k != "probe_relaxed"}
    built.check_matches(record, "/idx")
    with pytest.raises(ModelPathError, match="not the model"):
        built.check_matches(dict(record, fingerprint="0" * 64), "/idx")
    damaged = dict(built.describe(), probe_relaxed=[["x"]])
    with pytest.raises(ModelPathError, match="not the model"):
        built.check_matches(damaged, "/idx")
