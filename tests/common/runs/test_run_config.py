"""What lets a run resume (common/runs/run_config.py: identity, check_resumable)."""

from __future__ import annotations

import pytest

from common.runs.run_config import RunConfigMismatchError, check_resumable


def _run_config(validation: dict | None = None, test_mean: float | None = 90.0) -> dict:
    dataset: dict = {"dataset": "folder", "train_images": 36, "test_images": 10}
    if test_mean is not None:
        dataset["test_normalization"] = {"mean": test_mean, "std": 40.0}
    if validation is not None:
        dataset["validation"] = validation
    return {"method": "ddh", "num_classes": 5, "dataset": dataset,
            "normalization": {"mean": 100.0, "std": 50.0}}


def test_a_run_resumes_only_with_the_validation_split_it_started_with(tmp_path):
    """Another seed holds out other rows of the same count: the resumed epochs would train
    on faces the run's kept states were chosen on, and choose later ones on others."""
    split = {"fraction": 0.1, "seed": 0, "images": 4}
    check_resumable(_run_config(split), _run_config(dict(split)), str(tmp_path))
    check_resumable(_run_config(None), _run_config(None), str(tmp_path))  # none, or made before
    for old, new in ((split, {**split, "seed": 1}), (split, {**split, "fraction": 0.2}),
                     (None, split), (split, None)):
        with pytest.raises(RunConfigMismatchError, match="cannot be resumed") as info:
            check_resumable(_run_config(old), _run_config(new), str(tmp_path))
        assert "dataset" in str(info.value) and "validation" in str(info.value)


def test_a_run_resumes_only_with_the_test_split_it_started_with(tmp_path):
    """Another test folder of the same size: the run's cached figures, and the states
    chosen on them, would be of the other split (test statistics: its own, as the original
    normalised each split)."""
    check_resumable(_run_config(), _run_config(test_mean=90.0 + 1e-5), str(tmp_path))
    check_resumable(_run_config(test_mean=None), _run_config(), str(tmp_path))  # made before
    with pytest.raises(RunConfigMismatchError, match="test normalization mean: 90.0 -> 91.0"):
        check_resumable(_run_config(), _run_config(test_mean=91.0), str(tmp_path))
