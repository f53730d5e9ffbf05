"""DDAH's Keras layers (registered under ``face_hashing`` for ``.keras`` files)."""

from ddah_tf.layers.channel_attention import DDAHChannelAttention
from ddah_tf.layers.channels_first_flatten import ChannelsFirstFlatten
from ddah_tf.layers.min_max_normalization import MinMaxNormalization
from ddah_tf.layers.spatial_attention import DDAHSpatialAttention
from ddah_tf.layers.torch_conv_transpose import TorchConvTranspose2D

__all__ = ["ChannelsFirstFlatten", "DDAHChannelAttention", "DDAHSpatialAttention",
           "MinMaxNormalization", "TorchConvTranspose2D"]
