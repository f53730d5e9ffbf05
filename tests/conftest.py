"""Shared pytest setup: keep TensorFlow's C++ logging quiet in test output, and the
fixtures that tests in several files use."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def op_determinism():
    """For a test that trains with ``deterministic=True`` (which turns TensorFlow's op
    determinism on for the process): switch it off again afterwards, so the tests that
    follow in this worker run as they would alone."""
    yield
    from tensorflow.python.framework import config as tf_config

    if hasattr(tf_config, "disable_op_determinism"):
        tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def seeded_weights():
    """Deterministic initial weights for a module whose layers' initializers are unseeded:
    Keras's global seed set to 0 once, before the module's first test. A module asks for
    it with ``pytest.mark.usefixtures("seeded_weights")`` in its ``pytestmark``."""
    import keras

    keras.utils.set_random_seed(0)
