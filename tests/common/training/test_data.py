"""common/training/data.py: the synthetic set generated once, also when processes race."""

from __future__ import annotations

import os

import numpy as np

import common.synthetic
from common.data import load_pickle_folder
from common.training.data import ensure_synthetic

KWARGS = dict(num_identities=3, train_per_identity=2, test_per_identity=1)


def test_a_synthetic_set_another_process_generated_meanwhile_is_used(tmp_path, monkeypatch):
    """Two processes generating one folder (two workers of a run on one machine): the one
    that renames second finds the folder complete and uses it. Before, its rename failed
    with "Directory not empty" as an internal error (seen in the multi-worker test)."""
    target = tmp_path / "synthetic"
    real = common.synthetic.write_synthetic_dataset

    def raced(folder, **kwargs):
        meta = real(folder, **kwargs)
        other = tmp_path / "other"
        real(str(other), **kwargs)
        os.replace(other, target)  # the other process wins the race to the name
        return meta

    monkeypatch.setattr(common.synthetic, "write_synthetic_dataset", raced)
    meta = ensure_synthetic(str(target), KWARGS)
    assert {k: meta[k] for k in KWARGS} == KWARGS
    assert sorted(os.listdir(tmp_path)) == ["synthetic"]  # no temporary folder left
    monkeypatch.undo()
    expected = tmp_path / "expected"
    real(str(expected), **KWARGS)
    for split in ("train", "test"):
        got, want = (load_pickle_folder(str(f / split)) for f in (target, expected))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
