"""Tiny synthetic training data, the mAP a random ranking of it scores, and the tensors a
run folder's checkpoint holds: shared by the tests that train methods through the shared
loop, which otherwise each kept their own copy."""

from __future__ import annotations

import os

import numpy as np

from common.methods import registry
from common.metrics import retrieval_metrics
from common.runs.checkpoints import store as checkpoints
from common.training.data import SplitData, load_split_data


# Small values for the settings that size a model or a run, for the tests that check every
# registered method (tests/methods/): 12 bits, a 1/16-wide backbone, narrow dense layers,
# one epoch of features before the codes (DFH). A method keeps its defaults for the others.
TINY_SETTINGS = {"num_bits": 12, "width_multiplier": 0.0625, "code_length": 3,
                 "feature_units": 16, "hash_hidden_units": 16, "feature_epochs": 1}


def settings_it_has(name: str, values: dict) -> dict:
    """The entries of ``values`` that are settings of registered method ``name``."""
    fields = {field.name for field, _, _ in registry.settings_class(name).specs()}
    return {k: v for k, v in values.items() if k in fields}


def tiny_settings(name: str) -> dict:
    """The :data:`TINY_SETTINGS` that registered method ``name`` has."""
    return settings_it_has(name, TINY_SETTINGS)


def synthetic_split(root, identities: int, train_per: int, test_per: int) -> SplitData:
    """The synthetic set of ``identities`` x (``train_per`` train + ``test_per`` test)
    images, generated in (or read from) folder ``root``."""
    return load_split_data("synthetic", str(root), synthetic_kwargs=dict(
        num_identities=identities, train_per_identity=train_per, test_per_identity=test_per))


def chance_map(data: SplitData) -> float:
    """The exact expected mAP of a random ranking of ``data``'s test queries against its
    train split (every code equal, ties broken at random)."""
    zeros_q = np.zeros((len(data.test_labels), 8), np.float32)
    zeros_db = np.zeros((len(data.train_labels), 8), np.float32)
    return retrieval_metrics(zeros_q, data.test_labels, zeros_db, data.train_labels,
                             ties="expected")["map"]


def step_row(values: dict) -> np.ndarray:
    """A training step's named values as one float64 row: loss, each part, correct, images
    (the test step's: without images)."""
    row = [values["loss"], *values["parts"].values(), values["correct"]]
    if "images" in values:
        row.append(values["images"])
    return np.array([float(np.asarray(v)) for v in row])


def checkpoint_tensors(model_dir, slot: str = "last") -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in ``slot`` of run folder ``model_dir``, by its
    checkpoint key (the object graph aside)."""
    import tensorflow as tf

    index = checkpoints.read_index(str(model_dir))
    prefix = os.path.join(str(model_dir), "checkpoints", index["slots"][slot]["dir"], "ckpt")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}
