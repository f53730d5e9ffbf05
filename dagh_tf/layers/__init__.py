"""DAGH's Keras layers (registered under ``face_hashing`` for ``.keras`` files)."""

from dagh_tf.layers.discrete_hash import DiscreteHash
from dagh_tf.layers.discrete_identity_head import DiscreteIdentityHead
from dagh_tf.layers.spatial_gate import SpatialGate

__all__ = ["DiscreteHash", "DiscreteIdentityHead", "SpatialGate"]
