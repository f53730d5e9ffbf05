"""The DDAH network (ddah_tf.model) against its description, the public model's weight count
and a float64 numpy forward; the two optimisers' variable groups (ddah_tf.variable_groups)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import ddah_numpy_reference as ref
from tiny_networks import arr, count, randomize_batchnorms
from ddah_tf.layers import DDAHChannelAttention, DDAHSpatialAttention
from ddah_tf.model import OUTPUT_NAMES, attended_pass_model, build_ddah, build_trunk
from ddah_tf.variable_groups import attention_variables, trunk_variables, unoptimised_variables

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
              pytest.mark.usefixtures("seeded_weights")]

SMALL = dict(num_classes=5, num_bits=8, width_multiplier=0.125)   # widths / 8


def ids(variables) -> set[int]:
    return {id(v) for v in variables}


# --------------------------------------------------------------------------- the weight count
def hand_count(num_classes: int = 530, bits: int = 48, with_bn3: bool = False) -> dict:
    """Trainable weights of the public DDAH model, layer by layer (PyTorch's parameters:
    conv / linear weight + bias, BN weight + bias; running statistics are buffers).

    Attention branch (32x32x3 input):
        spatial_features_1  Conv2d(3, 32, 2, 2)      3*32*2*2 + 32   =     416   BN(32)   64
        spatial_features_2  Conv2d(32, 64, 2, 2)    32*64*2*2 + 64   =   8,256   BN(64)  128
        spatial_features_3  Conv2d(64, 128, 2, 2)  64*128*2*2 + 128  =  32,896   BN(128) 256
        fc                  Conv2d(128, 128, 1)     128*128 + 128    =  16,512   BN(128) 256
        upscales_1          ConvT(128, 64, 3)     128*64*3*3 + 64    =  73,792
        bn1                 BN(64)                                   =     128
        upscales_2          ConvT(64, 32, 3)       64*32*3*3 + 32    =  18,464
        bn2                 BN(32)                                   =      64
        upscales_3          ConvT(32, 16, 3)       32*16*3*3 + 16    =   4,624
        bn3 (never applied) BN(16)                                   =      32
        upscales_4          Conv2d(16, 1, 1)           16 + 1        =      17
        = 155,873 without bn3, 155,905 with it.
    Trunk:
        features  Conv2d(3, 32, 3)      3*32*9 + 32     =       896   BN(32)    64
                  Conv2d(32, 64, 2)    32*64*4 + 64     =     8,256   BN(64)   128
                  Conv2d(64, 128, 2)  64*128*4 + 128    =    32,896   BN(128)  256
        conv4     Conv2d(128, 256, 2) 128*256*4 + 256   =   131,328   BN(256)  512
        global_avgpooling_3  Linear(1152, 512) + Linear(512, 128)
                             = 590,336 + 65,664         =   656,000
        global_avgpooling_4  Linear(1024, 512) + Linear(512, 256)
                             = 524,800 + 131,328        =   656,128
        face_features_layer  Linear(2176, 1024) 2,229,248 + BN(1024) 2,048
        hash_layer           Linear(1024, 48)      49,200 + BN(48)      96
        classifier           Linear(48, 530)       48*530 + 530 = 25,970
        = 3,793,026 at 530 classes, 48 bits.
    Total 3,948,899; 3,948,931 with bn3.
    """
    conv = lambda i, o, k: i * o * k * k + o
    bn = lambda c: 2 * c
    linear = lambda i, o: i * o + o
    attention = (conv(3, 32, 2) + bn(32) + conv(32, 64, 2) + bn(64) + conv(64, 128, 2) + bn(128)
                 + conv(128, 128, 1) + bn(128)
                 + conv(128, 64, 3) + bn(64) + conv(64, 32, 3) + bn(32) + conv(32, 16, 3)
                 + (bn(16) if with_bn3 else 0) + conv(16, 1, 1))
    # 32 -> conv3 30 -> pool 15 -> conv2 14 -> pool 7 -> conv2 6 -> pool 3 -> conv2 2
    f3, f4 = 128 * 3 * 3, 256 * 2 * 2
    trunk = (conv(3, 32, 3) + bn(32) + conv(32, 64, 2) + bn(64) + conv(64, 128, 2) + bn(128)
             + conv(128, 256, 2) + bn(256)
             + linear(f3, 512) + linear(512, 128) + linear(f4, 512) + linear(512, 256)
             + linear(f3 + f4, 1024) + bn(1024) + linear(1024, bits) + bn(bits)
             + linear(bits, num_classes))
    return {"attention": attention, "trunk": trunk, "total": attention + trunk}


@pytest.fixture(scope="module")
def full_models():
    """The full 530-class, 48-bit models (built symbolically: no forward on data)."""
    return build_ddah(530, 48), build_ddah(530, 48, unused_bn3=True)


def test_weight_count_equals_the_public_model(full_models):
    default, with_bn3 = full_models
    assert hand_count() == {"attention": 155_873, "trunk": 3_793_026, "total": 3_948_899}
    assert hand_count(with_bn3=True)["total"] == 3_948_931
    assert count(default.trainable_variables) == 3_948_899          # default: no bn3
    assert count(with_bn3.trainable_variables) == 3_948_931         # the public model's print
    assert count(default.get_layer("spatial_attention").trainable_variables) == 155_873
    assert count(default.get_layer("trunk").trainable_variables) == 3_793_026
    # BN running statistics (buffers in PyTorch, non-trainable here): 2 x channels.
    assert count(default.non_trainable_variables) == 2 * (
        (32 + 64 + 128 + 128 + 64 + 32) + (32 + 64 + 128 + 256 + 1024 + 48))
    assert count(with_bn3.non_trainable_variables) == count(default.non_trainable_variables) + 32


def test_full_width_shapes(full_models):
    model = full_models[0]
    trunk = model.get_layer("trunk")
    shapes = {name: tuple(trunk.get_layer(name).output.shape[1:]) for name in (
        "pool1", "pool2", "pool3", "conv4_relu", "channel_attention_3", "channel_attention_4",
        "fusion", "face_features_relu", "hash_bn", "classifier")}
    assert shapes == {"pool1": (15, 15, 32), "pool2": (7, 7, 64), "pool3": (3, 3, 128),
                      "conv4_relu": (2, 2, 256), "channel_attention_3": (3, 3, 128),
                      "channel_attention_4": (2, 2, 256), "fusion": (2176,),
                      "face_features_relu": (1024,), "hash_bn": (48,), "classifier": (530,)}
    assert [tuple(o.shape) for o in model.outputs] == [(None, 530), (None, 48)] * 2
    assert list(model.output_names) == list(OUTPUT_NAMES)
    ca3, ca4 = trunk.get_layer("channel_attention_3"), trunk.get_layer("channel_attention_4")
    assert (ca3.hidden.kernel.shape, ca3.output_dense.kernel.shape) == ((1152, 512), (512, 128))
    assert (ca4.hidden.kernel.shape, ca4.output_dense.kernel.shape) == ((1024, 512), (512, 256))
    assert model.get_layer("spatial_attention").filters == 32


def test_full_model_variable_groups(full_models):
    default, with_bn3 = full_models
    assert count(trunk_variables(default)) == 3_793_026
    assert count(attention_variables(default)) == 155_873 - 192     # bn1, bn2 not optimised
    assert count(unoptimised_variables(default)) == 192
    assert count(unoptimised_variables(with_bn3)) == 192 + 32
    assert count(unoptimised_variables(default, include_skip_batchnorms=True)) == 0
    assert count(unoptimised_variables(with_bn3, include_skip_batchnorms=True)) == 32


# --------------------------------------------------------------------------- the small model
@pytest.fixture(scope="module")
def small():
    model = build_ddah(**SMALL)
    rng = np.random.default_rng(0)
    randomize_batchnorms(model, rng, std=0.2, max_variance=2.0)
    x = rng.uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    return model, x


def numpy_params(model):
    spatial_p = ref.spatial_params(model.get_layer("spatial_attention"))
    trunk = model.get_layer("trunk")
    trunk_p = {}
    for layer in trunk.layers:
        if isinstance(layer, DDAHChannelAttention):
            trunk_p[layer.name] = (layer.hidden.get_weights(), layer.output_dense.get_weights())
        elif layer.weights:
            trunk_p[layer.name] = layer.get_weights()
    return spatial_p, trunk_p


def test_small_widths(small):
    model, _ = small
    trunk = model.get_layer("trunk")
    assert [trunk.get_layer(f"conv{i}_conv").filters for i in (1, 2, 3, 4)] == [4, 8, 16, 32]
    assert trunk.get_layer("channel_attention_3").hidden_units == 64
    assert trunk.get_layer("face_features").units == 128
    assert model.get_layer("spatial_attention").filters == 4


@pytest.mark.parametrize("training", [True, False])
def test_forward_matches_numpy(small, training):
    """Both passes, in training mode (BN batch statistics) and inference (moving ones)."""
    model, x = small
    got = [arr(o) for o in model(x, training=training)]
    want = ref.ddah(x, *numpy_params(model), training=training)
    for name, g, w in zip(OUTPUT_NAMES, got, want):
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4, err_msg=name)


def test_the_two_passes_share_the_trunk(small):
    model, x = small
    trunk = model.get_layer("trunk")
    assert isinstance(trunk, keras.Model) and len(trunk._inbound_nodes) == 2   # called twice
    # One set of trunk variables, counted once in the model.
    assert len(ids(model.trainable_variables)) == len(model.trainable_variables)
    assert ids(trunk.trainable_variables) <= ids(model.trainable_variables)
    # Pass b is the trunk on the raw image, pass a the trunk on the attended image.
    logits_a, hash_a, logits_b, hash_b = (arr(o) for o in model(x, training=False))
    attended = model.get_layer("spatial_attention")(x, training=False)
    for got, want in zip((logits_a, hash_a), trunk(attended, training=False)):
        np.testing.assert_allclose(got, arr(want), rtol=1e-5, atol=1e-5)
    for got, want in zip((logits_b, hash_b), trunk(x, training=False)):
        np.testing.assert_allclose(got, arr(want), rtol=1e-5, atol=1e-5)
    # Changing one trunk weight changes both passes.
    kernel = trunk.get_layer("classifier").kernel
    saved = arr(kernel).copy()
    kernel.assign(saved + 1.0)
    changed = [arr(o) for o in model(x, training=False)]
    kernel.assign(saved)
    assert not np.allclose(changed[0], logits_a) and not np.allclose(changed[2], logits_b)


def test_variable_groups_are_disjoint_and_cover_everything(small):
    model, _ = small
    trunk, attention = trunk_variables(model), attention_variables(model)
    rest = unoptimised_variables(model)
    all_ids = ids(model.trainable_variables)
    assert not ids(trunk) & ids(attention)
    assert not (ids(trunk) | ids(attention)) & ids(rest)
    assert ids(trunk) | ids(attention) | ids(rest) == all_ids
    assert len(trunk) + len(attention) + len(rest) == len(model.trainable_variables)
    assert sorted(v.path.split("/", 1)[1] for v in rest) == sorted(
        ["skip_1_bn/gamma", "skip_1_bn/beta", "skip_2_bn/gamma", "skip_2_bn/beta"])
    # With the skip BNs trained, the two optimisers' groups alone cover every variable.
    attention_all = attention_variables(model, include_skip_batchnorms=True)
    assert not ids(trunk) & ids(attention_all)
    assert ids(trunk) | ids(attention_all) == all_ids
    assert ids(attention_all) == ids(model.get_layer("spatial_attention").trainable_variables)
    assert ids(trunk) == ids(model.get_layer("trunk").trainable_variables)


def test_unused_bn3_is_in_neither_group():
    model = build_ddah(**SMALL, unused_bn3=True)
    rest = unoptimised_variables(model, include_skip_batchnorms=True)
    assert [v.path.split("/", 1)[1] for v in rest] == ["unused_bn3/gamma", "unused_bn3/beta"]
    assert ids(trunk_variables(model)) | ids(attention_variables(model, True)) | ids(rest) == \
        ids(model.trainable_variables)


def test_gradients_reach_the_right_groups(small):
    """loss on pass b reaches the trunk only; pass a reaches the trunk and the attention."""
    model, x = small
    trunk, attention = trunk_variables(model), attention_variables(model)
    with tf.GradientTape(persistent=True) as tape:
        logits_a, hash_a, logits_b, hash_b = model(x, training=True)
        pass_a = tf.reduce_sum(logits_a * tf.cos(logits_a)) + tf.reduce_sum(hash_a ** 2)
        pass_b = tf.reduce_sum(logits_b * tf.cos(logits_b)) + tf.reduce_sum(hash_b ** 2)
    assert all(g is None for g in tape.gradient(pass_b, attention))
    assert all(g is not None for g in tape.gradient(pass_b, trunk))
    assert all(g is not None and np.abs(arr(g)).max() > 0
               for g in tape.gradient(pass_a, attention + trunk))


def test_trunk_batchnorm_statistics_are_updated_once_per_pass():
    """Training mode: each pass normalises with its own batch and moves the trunk's BN
    statistics, so one step moves them twice (momentum 0.9: 0.1 of each batch mean)."""
    model = build_ddah(**SMALL)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    trunk = model.get_layer("trunk")
    conv, bn = trunk.get_layer("conv1_conv"), trunk.get_layer("conv1_bn")
    attended = model.get_layer("spatial_attention")(x, training=True)   # batch statistics
    mean_a = arr(conv(attended)).astype(np.float64).mean(axis=(0, 1, 2))
    mean_b = arr(conv(x)).astype(np.float64).mean(axis=(0, 1, 2))
    model(x, training=True)
    got = arr(bn.moving_mean)
    a_then_b = 0.9 * 0.1 * mean_a + 0.1 * mean_b       # the original's order
    b_then_a = 0.9 * 0.1 * mean_b + 0.1 * mean_a       # Keras' graph order
    assert min(np.abs(got - a_then_b).max(), np.abs(got - b_then_a).max()) < 1e-7
    assert np.abs(got - 0.1 * mean_a).max() > 1e-5 and np.abs(got - 0.1 * mean_b).max() > 1e-5


def test_attended_pass_model(small):
    model, x = small
    inference = attended_pass_model(model)
    assert ids(inference.trainable_variables) == ids(model.trainable_variables)
    full = model(x, training=False)
    for got, want in zip(inference(x, training=False), full[:2]):
        np.testing.assert_array_equal(arr(got), arr(want))


def test_initialisation_follows_the_original(full_models):
    """Xavier-normal kernels (untruncated), zero biases, BN gamma 1 / beta 0, PyTorch's
    momentum and epsilon."""
    model = full_models[0]
    face = model.get_layer("trunk").get_layer("face_features")
    kernel = arr(face.kernel)
    std = np.sqrt(2.0 / (2176 + 1024))
    assert kernel.std() == pytest.approx(std, rel=0.01)
    assert np.abs(kernel).max() > 4 * std                 # not truncated at 2 sigma
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
            np.testing.assert_array_equal(arr(layer.gamma), 1.0)
            np.testing.assert_array_equal(arr(layer.beta), 0.0)
        elif getattr(layer, "bias", None) is not None:
            np.testing.assert_array_equal(arr(layer.bias), 0.0)


def test_keras_file_round_trip(small, tmp_path):
    model, x = small
    model.save(tmp_path / "ddah.keras")
    loaded = keras.models.load_model(tmp_path / "ddah.keras")
    assert isinstance(loaded.get_layer("spatial_attention"), DDAHSpatialAttention)
    for got, want in zip(loaded(x, training=False), model(x, training=False)):
        np.testing.assert_array_equal(arr(got), arr(want))


def test_trunk_alone_and_bad_arguments():
    trunk = build_trunk(7, 12, width_multiplier=0.125)
    assert [tuple(o.shape) for o in trunk.outputs] == [(None, 7), (None, 12)]
    for kwargs, message in ((dict(num_classes=1), "num_classes must be >= 2"),
                            (dict(num_classes=5, num_bits=0), "num_bits must be >= 1"),
                            (dict(num_classes=5, width_multiplier=0), "width_multiplier")):
        with pytest.raises(ValueError, match=message):
            build_ddah(**kwargs)
