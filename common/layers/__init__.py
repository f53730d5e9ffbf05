"""Custom Keras layers shared by the hashing methods (registered for serialization)."""

from common.layers.block_hash import BlockHash
from common.layers.center_loss import CenterLoss
from common.layers.straight_through_sign import StraightThroughSign

__all__ = ["BlockHash", "CenterLoss", "StraightThroughSign"]
