"""Which variables each of DDAH's two optimisers updates.

The original (train.py) builds two Adams: ``optimizer_a`` over the attention branch's
Sequentials (spatial_features_1..3, fc, upscales_1..4) and ``optimizer_b`` over the trunk
(features, conv4, global_avgpooling_3/4, face_features_layer, hash_layer, classifier). The
attention branch's loose BatchNorms bn1, bn2 (and the unused bn3) are in neither: their
gamma / beta stay at 1 / 0 for the whole run. Hence three groups, disjoint, whose union is
every trainable variable of the model.
"""

from __future__ import annotations

import keras

from ddah_tf.model import ATTENTION_LAYER, TRUNK_LAYER


def trunk_variables(model: keras.Model) -> list:
    """``optimizer_b``'s: every trainable variable of the shared trunk (both passes use them)."""
    return list(model.get_layer(TRUNK_LAYER).trainable_variables)


def attention_variables(model: keras.Model, include_skip_batchnorms: bool = False) -> list:
    """``optimizer_a``'s: the spatial-attention branch, without bn1 / bn2 / bn3.

    Args:
        model: a model from :func:`ddah_tf.model.build_ddah`.
        include_skip_batchnorms: also train bn1 / bn2's gamma and beta with this group
            (not the original's behaviour; an option for a variant that trains them).
    """
    return model.get_layer(ATTENTION_LAYER).optimised_variables(include_skip_batchnorms)


def unoptimised_variables(model: keras.Model, include_skip_batchnorms: bool = False) -> list:
    """Trainable variables no optimiser of the original updates: bn1 / bn2 (unless
    ``include_skip_batchnorms``) and the unused bn3 (when built)."""
    taken = {id(v) for v in trunk_variables(model)}
    taken |= {id(v) for v in attention_variables(model, include_skip_batchnorms)}
    return [v for v in model.trainable_variables if id(v) not in taken]
