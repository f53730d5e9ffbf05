"""What the shared training loop needs from a hashing method.

A method is a model builder plus its loss: the loop, checkpoints, evaluation and
export are shared. Subclasses fill in :meth:`build_model` and :meth:`loss_terms`
and, when they keep state outside the optimizer (DCBH's centers),
:meth:`before_optimizer_step`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# Output names every method's model provides (by position in its outputs list).
LOGITS = "logits"
CODES = "relaxed_codes"


class HashingMethod:
    """Base class of a trainable hashing method.

    Attributes:
        name: short method name ("dcbh", "ddch", ...).
        output_names: names of the model's outputs, in order; must contain
            "logits" (used for accuracy) and "relaxed_codes" (signed for retrieval).
    """

    name: str = "method"
    output_names: tuple[str, ...] = (LOGITS, CODES)

    def build_model(self, num_classes: int) -> keras.Model:
        """A functional model from (batch, 32, 32, 3) preprocessed images to the outputs."""
        raise NotImplementedError

    def loss_terms(self, model: keras.Model, outputs: dict[str, tf.Tensor],
                   labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Weighted loss parts (float32 scalars); their sum is the training cost."""
        raise NotImplementedError

    def loss_reductions(self) -> dict[str, str]:
        """How each loss part depends on the batch: "mean", "sum" or "none".

        Distributed training (common.training.distribution) needs it to make the
        replicas' parts add up to the global batch's: a batch mean is weighted by
        the replica's share of the batch, a batch sum is kept, a part that does not
        depend on the batch (weight decay) is split evenly. Every part of
        :meth:`loss_terms` must be named.
        """
        raise NotImplementedError(f"{self.name} does not say how its loss parts depend on "
                                  "the batch (loss_reductions), so it cannot be distributed")

    def before_optimizer_step(self, model: keras.Model, outputs: dict[str, tf.Tensor],
                              labels: tf.Tensor) -> None:
        """State updates applied every training step before the optimizer's."""
        return None  # a statement, not only a docstring: AutoGraph must parse the body

    def config(self) -> dict[str, Any]:
        """The method's settings, recorded with every run (``from_config`` inverts it)."""
        return {"method": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HashingMethod":
        """Rebuild the method from :meth:`config` (e.g. to export a finished run)."""
        if config.get("method", cls.name) != cls.name:
            raise ValueError(f"config is for method {config.get('method')!r}, not {cls.name!r}")
        return cls(**{k: v for k, v in config.items() if k != "method"})

    def named_outputs(self, outputs) -> dict[str, tf.Tensor]:
        """Model outputs (list) -> {name: float32 tensor}."""
        if isinstance(outputs, dict):
            items = outputs.items()
        else:
            items = zip(self.output_names, outputs)
        return {k: tf.cast(v, tf.float32) for k, v in items}


def check_settings(checks) -> None:
    """Raise ValueError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def batch_mean(values: tf.Tensor) -> tf.Tensor:
    """Mean of all ``values``; 0 for an empty batch (a replica may get none).

    Bit for bit ``tf.reduce_mean`` otherwise (the same sum, divided by the count).
    """
    values = tf.convert_to_tensor(values)
    return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.size(values), values.dtype))


def sparse_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy with integer labels, mean over the batch."""
    return batch_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)))
