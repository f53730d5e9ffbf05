"""Shared pytest setup: keep TensorFlow's C++ logging quiet in test output."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
