"""What lets a run resume (common/runs/run_config.py: identity, check_resumable)."""

from __future__ import annotations

import pytest

from common.runs.run_config import RunConfigMismatchError, check_resumable


def _run_config(validation: dict | None) -> dict:
    dataset: dict = {"dataset": "folder", "train_images": 36, "test_images": 10}
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
