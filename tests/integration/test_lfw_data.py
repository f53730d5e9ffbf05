"""The real-face folders (LFW 32x32 in the original layout), when this machine has them.

Research-only data outside the repository: every test here skips when it is absent.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from checkout import ROOT
from common.methods.baselines import ITQ
from common.metrics import retrieval_metrics
from common.training.data import load_split_data

LFW = os.path.join(ROOT, "..", "shared", "data", "lfw_deepfunneled_32")

pytestmark = pytest.mark.skipif(not os.path.isdir(os.path.join(LFW, "train")),
                                reason=f"no LFW data at {LFW}")


@pytest.fixture(scope="module")
def lfw():
    return load_split_data("folder", train_dir=os.path.join(LFW, "train"),
                           test_dir=os.path.join(LFW, "test"))


def test_lfw_folders_load_in_the_original_layout(lfw):
    assert lfw.train_images.shape == (3927, 32, 32, 3)
    assert lfw.test_images.shape == (630, 32, 32, 3)
    assert lfw.num_classes == 311
    assert set(np.unique(lfw.test_labels)) <= set(np.unique(lfw.train_labels))
    assert lfw.train_images.min() >= -1.0 and lfw.train_images.max() <= 1.0
    assert 0 < lfw.normalization.std


@pytest.mark.slow
def test_itq_on_real_faces_beats_chance(lfw):
    """Pixel ITQ at 48 bits: mAP 0.0231 measured.

    The mean fraction of relevant items (about a random ranking's mAP) is 0.0049.
    """
    itq = ITQ(48, seed=0).fit(lfw.train_images.reshape(3927, -1))
    figures = retrieval_metrics(itq.project(lfw.test_images.reshape(630, -1)), lfw.test_labels,
                                itq.project(lfw.train_images.reshape(3927, -1)), lfw.train_labels)
    chance = np.mean([np.mean(lfw.train_labels == y) for y in lfw.test_labels])
    assert figures["map"] > 3 * chance
