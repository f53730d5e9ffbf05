"""Batch normalisation in training mode without touching its moving statistics.

Why: two things need a network's batch-norm layers to normalise with the statistics of
the batch at hand while leaving their moving statistics alone:

* a second pass through shared layers in one training step (DDAH's raw-image pass):
  if it updated the moving statistics, they would blend two input distributions, and
  inference, which runs the first pass alone, would normalise with statistics that no
  image it sees has;
* coding with each batch's own statistics, as the original DDAH evaluated (it never
  switches its network to inference mode).

How: Keras' ``BatchNormalization`` updates ``moving = moving * momentum + batch * (1 -
momentum)`` in training mode. With ``momentum`` set to 1 while the layer is traced, the
update writes back exactly the old value (``m * 1.0 + b * 0.0 == m`` for every finite
batch statistic), so the statistics stay bit-for-bit what they were, while the
normalisation itself (batch mean and variance) is unchanged. The setting is read when the
layer's ``call`` runs, i.e. when a ``tf.function`` traces it: wrap the calls to freeze,
inside the traced function.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras

FROZEN_MOMENTUM = 1.0


def batch_norm_layers(layer: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in ``layer`` (itself included), each once."""
    found, seen = [], set()
    for sub in [layer, *layer._flatten_layers(include_self=False, recursive=True)]:
        if isinstance(sub, keras.layers.BatchNormalization) and id(sub) not in seen:
            seen.add(id(sub))
            found.append(sub)
    return found


@contextlib.contextmanager
def frozen_moving_statistics(layer: keras.layers.Layer) -> Iterator[None]:
    """Calls of ``layer``'s batch-norm layers made inside leave their moving statistics
    unchanged (training mode still normalises with the batch's own statistics)."""
    layers = batch_norm_layers(layer)
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.momentum = FROZEN_MOMENTUM
    try:
        yield
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
