"""The DCBH network (dcbh_tf.model.build_dcbh) against the original FHNet.

Reference: ../shared/reference/original_dcbh.md ("Network"). Full-size models are
built only for the parameter counts and the layer configurations (no forward pass);
numerical checks use a narrow backbone (width_multiplier=0.0625) and few classes.
"""

import keras
import numpy as np
import pytest

from tiny_networks import (BATCH, CONV_FILTERS, CONV_NAMES, arr, count, images, inbound,
                           randomize_batchnorms)

from common.layers import BlockHash, CenterLoss
from dcbh_tf.model import OUTPUT_NAMES, build_dcbh

TINY_WIDTH = 0.0625
NUM_CLASSES = 5
NUM_BITS = 48
CODE_LENGTH = 6

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")


def tiny_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = build_dcbh(NUM_CLASSES, NUM_BITS, CODE_LENGTH, width_multiplier=TINY_WIDTH, **kwargs)
    randomize_batchnorms(model, np.random.default_rng(seed))
    return model


@pytest.fixture(scope="module")
def full_530():
    return build_dcbh(530)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


# ----------------------------------------------------------------------------- sizes

def test_parameter_count_facescrub(full_530):
    assert count(full_530.trainable_weights) == 8_191_780
    # Non-trainable: exactly the BN moving statistics (2 x channels of every BN).
    bn_channels = sum(CONV_FILTERS) + 288
    assert count(full_530.non_trainable_weights) == 2 * bn_channels
    paths = [w.path for w in full_530.non_trainable_weights]
    assert all(p.endswith(("moving_mean", "moving_variance")) for p in paths), paths
    assert len(paths) == 2 * 11


def test_parameter_count_youtube_faces():
    model = build_dcbh(1595)
    assert count(model.trainable_weights) == 8_858_470
    assert all(w.path.endswith(("moving_mean", "moving_variance"))
               for w in model.non_trainable_weights)


def test_centers_are_trainable_and_counted(full_530):
    centers = full_530.get_layer("center_loss").centers
    assert tuple(centers.shape) == (530, 288)
    assert any(w is centers for w in full_530.trainable_weights)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_dcbh(1)
    with pytest.raises(ValueError):
        build_dcbh(NUM_CLASSES, width_multiplier=0.0)


# ----------------------------------------------------------------------------- architecture

def expected_layer_names():
    names = ["images"]
    for b, n_convs in enumerate((2, 2, 3, 3), start=1):
        for c in range(1, n_convs + 1):
            names += [f"block{b}_{c}_conv", f"block{b}_{c}_bn", f"block{b}_{c}_relu"]
        names.append(f"block{b}_pool")
    names += ["block4_gap", "block3_gap", "multiscale_fusion", "feature_dense", "feature_bn",
              "feature_relu", "center_loss", "block_hash", "logits", "center_logits",
              "relaxed_codes", "features"]
    return names


def test_layer_set_and_connectivity(full_530):
    model = full_530
    assert sorted(l.name for l in model.layers) == sorted(expected_layer_names())
    # The main chain: each conv/bn/relu/pool is fed by the previous one.
    chain = ["images"]
    for b, n_convs in enumerate((2, 2, 3, 3), start=1):
        for c in range(1, n_convs + 1):
            chain += [f"block{b}_{c}_conv", f"block{b}_{c}_bn", f"block{b}_{c}_relu"]
        chain.append(f"block{b}_pool")
    for prev, name in zip(chain, chain[1:]):
        assert inbound(model, name) == [prev], name
    assert inbound(model, "block3_gap") == ["block3_pool"]
    assert inbound(model, "block4_gap") == ["block4_pool"]
    assert inbound(model, "multiscale_fusion") == ["block4_gap", "block3_gap"]   # block 4 first
    head = [("feature_dense", "multiscale_fusion"), ("feature_bn", "feature_dense"),
            ("feature_relu", "feature_bn"), ("center_loss", "feature_relu"),
            ("block_hash", "center_loss"), ("logits", "block_hash"),
            ("center_logits", "center_loss"), ("relaxed_codes", "block_hash"),
            ("features", "center_loss")]
    for name, src in head:
        assert inbound(model, name) == [src], name


def test_conv_bn_relu_pool_configuration(full_530):
    model = full_530
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [l.name for l in convs] == [f"{n}_conv" for n in CONV_NAMES]
    for conv, filters in zip(convs, CONV_FILTERS):
        cfg = conv.get_config()
        assert cfg["filters"] == filters
        assert tuple(cfg["kernel_size"]) == (3, 3)
        assert tuple(cfg["strides"]) == (1, 1)
        assert cfg["padding"] == "same"
        assert cfg["use_bias"] is False
        assert conv.bias is None
        assert cfg["activation"] == "linear"
        assert cfg["kernel_initializer"]["class_name"] == "GlorotUniform"
        assert cfg["data_format"] == "channels_last"
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [l.name for l in bns] == [f"{n}_bn" for n in CONV_NAMES] + ["feature_bn"]
    for bn in bns:
        cfg = bn.get_config()
        assert cfg["momentum"] == pytest.approx(0.9)
        assert cfg["epsilon"] == pytest.approx(1e-3)
        assert cfg["center"] is True and cfg["scale"] is True
        assert cfg["axis"] in (-1, [-1], 3, [3])
    relus = [l for l in model.layers if isinstance(l, keras.layers.ReLU)]
    assert [l.name for l in relus] == [f"{n}_relu" for n in CONV_NAMES] + ["feature_relu"]
    for relu in relus:
        cfg = relu.get_config()
        assert cfg["max_value"] is None and cfg["negative_slope"] == 0 and cfg["threshold"] == 0
    pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert [l.name for l in pools] == [f"block{b}_pool" for b in range(1, 5)]
    for pool in pools:
        cfg = pool.get_config()
        assert tuple(cfg["pool_size"]) == (2, 2)
        assert tuple(cfg["strides"]) == (2, 2)
        assert cfg["padding"] == "valid"
    shapes = [tuple(p.output.shape) for p in pools]
    assert shapes == [(None, 16, 16, 64), (None, 8, 8, 128), (None, 4, 4, 256), (None, 2, 2, 512)]
    gaps = [l for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D)]
    assert sorted(l.name for l in gaps) == ["block3_gap", "block4_gap"]
    assert tuple(model.get_layer("multiscale_fusion").output.shape) == (None, 768)


def test_head_configuration(full_530):
    model = full_530
    dense = model.get_layer("feature_dense")
    assert dense.units == 288 and dense.use_bias
    assert tuple(dense.kernel.shape) == (768, 288)
    hasher = model.get_layer("block_hash")
    assert isinstance(hasher, BlockHash)
    assert (hasher.num_bits, hasher.code_length) == (48, 6)
    center = model.get_layer("center_loss")
    assert isinstance(center, CenterLoss) and center.reduction == "sum"
    assert tuple(model.get_layer("logits").kernel.shape) == (48, 530)
    assert tuple(model.get_layer("center_logits").kernel.shape) == (288, 530)
    dense_layers = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    assert [l.name for l in dense_layers] == ["feature_dense", "logits", "center_logits"]
    for layer in dense_layers:
        cfg = layer.get_config()
        assert cfg["use_bias"] is True
        assert cfg["activation"] == "linear"
        assert cfg["kernel_initializer"]["class_name"] == "GlorotUniform"
        assert cfg["bias_initializer"]["class_name"] == "Zeros"


def test_outputs_order_and_shapes(full_530):
    assert OUTPUT_NAMES == ("logits", "center_logits", "relaxed_codes", "features")
    out_layers = [t._keras_history.operation.name for t in full_530.outputs]
    assert out_layers == list(OUTPUT_NAMES)
    shapes = [tuple(t.shape) for t in full_530.outputs]
    assert shapes == [(None, 530), (None, 530), (None, 48), (None, 288)]
    assert tuple(full_530.inputs[0].shape) == (None, 32, 32, 3)


def test_output_shapes_other_code_lengths():
    model = build_dcbh(7, num_bits=12, code_length=4, width_multiplier=TINY_WIDTH)
    outs = model(images(n=3), training=False)
    assert [tuple(o.shape) for o in outs] == [(3, 7), (3, 7), (3, 12), (3, 48)]


# ----------------------------------------------------------------------------- numerics

def test_fusion_is_gap_block4_then_gap_block3(tiny):
    model = tiny
    probe = keras.Model(model.input, [model.get_layer("block3_pool").output,
                                       model.get_layer("block4_pool").output,
                                       model.get_layer("multiscale_fusion").output])
    p3, p4, fused = (arr(t) for t in probe(images(), training=False))
    assert p3.shape == (BATCH, 4, 4, 16) and p4.shape == (BATCH, 2, 2, 32)
    expected = np.concatenate([p4.mean(axis=(1, 2)), p3.mean(axis=(1, 2))], axis=1)
    assert fused.shape == (BATCH, 48)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    # and it is not the other order
    swapped = np.concatenate([p3.mean(axis=(1, 2)), p4.mean(axis=(1, 2))], axis=1)
    assert not np.allclose(fused[:, :32], swapped[:, :32])


def test_first_conv_block_numerics(tiny):
    """block1_1: conv (no bias, SAME) -> inference BN (eps 1e-3) -> ReLU, vs numpy."""
    model = tiny
    x = images()
    probe = keras.Model(model.input, model.get_layer("block1_1_relu").output)
    got = arr(probe(x, training=False))
    w = arr(model.get_layer("block1_1_conv").kernel, np.float64)      # (3, 3, 3, 4)
    pad = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((BATCH, 32, 32, w.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            conv += pad[:, dy:dy + 32, dx:dx + 32, :] @ w[dy, dx]
    bn = model.get_layer("block1_1_bn")
    g, b, mm, mv = (arr(v, np.float64) for v in
                    (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    expected = np.maximum((conv - mm) / np.sqrt(mv + 1e-3) * g + b, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_head_forward_numerics(tiny):
    model = tiny
    x = images(seed=3)
    probe = keras.Model(model.input, model.get_layer("multiscale_fusion").output)
    fused = arr(probe(x, training=False), np.float64)
    logits, center_logits, codes, features = (arr(o, np.float64)
                                              for o in model(x, training=False))
    # features = ReLU(BN_inference(Dense(fused)))
    dense = model.get_layer("feature_dense")
    bn = model.get_layer("feature_bn")
    h = fused @ arr(dense.kernel, np.float64) + arr(dense.bias, np.float64)
    g, b, mm, mv = (arr(v, np.float64) for v in
                    (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    np.testing.assert_allclose(features, np.maximum((h - mm) / np.sqrt(mv + 1e-3) * g + b, 0),
                               rtol=1e-4, atol=1e-5)
    assert features.shape == (BATCH, NUM_BITS * CODE_LENGTH)
    # relaxed codes = tanh(max(softmax(block)) - 0.5), consecutive blocks of CODE_LENGTH
    blocks = features.reshape(BATCH, NUM_BITS, CODE_LENGTH)
    e = np.exp(blocks - blocks.max(axis=-1, keepdims=True))
    soft = e / e.sum(axis=-1, keepdims=True)
    expected_codes = np.tanh(soft.max(axis=-1) - 0.5)
    np.testing.assert_allclose(codes, expected_codes, rtol=1e-5, atol=1e-6)
    assert codes.shape == (BATCH, NUM_BITS)
    # two classifier heads
    for layer_name, inp, out in (("logits", expected_codes, logits),
                                 ("center_logits", features, center_logits)):
        layer = model.get_layer(layer_name)
        ref = inp @ arr(layer.kernel, np.float64) + arr(layer.bias, np.float64)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        assert out.shape == (BATCH, NUM_CLASSES)


# ----------------------------------------------------------------------------- serialization

def test_keras_round_trip(tmp_path):
    model = tiny_model(seed=1)
    centers = model.get_layer("center_loss").centers
    centers.assign(np.random.default_rng(7).normal(size=tuple(centers.shape)).astype(np.float32))
    x = images(seed=5)
    before = [arr(o) for o in model(x, training=False)]
    path = tmp_path / "dcbh.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("center_loss"), CenterLoss)
    assert isinstance(loaded.get_layer("block_hash"), BlockHash)
    after = [arr(o) for o in loaded(x, training=False)]
    assert len(after) == 4
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(arr(loaded.get_layer("center_loss").centers),
                                  arr(centers))
    assert loaded.get_layer("center_loss").reduction == "sum"
    assert count(loaded.trainable_weights) == count(model.trainable_weights)
    assert count(loaded.non_trainable_weights) == count(model.non_trainable_weights)


def test_keras_round_trip_keeps_mean_reduction(tmp_path):
    model = build_dcbh(3, num_bits=8, code_length=4, width_multiplier=TINY_WIDTH,
                       center_reduction="mean")
    path = tmp_path / "mean.keras"
    model.save(path)
    assert keras.saving.load_model(path).get_layer("center_loss").reduction == "mean"


# ----------------------------------------------------------------------------- mixed precision

def test_mixed_bfloat16():
    import tensorflow as tf

    from dcbh_tf.method import DCBH

    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(0)
        method = DCBH(width_multiplier=TINY_WIDTH)
        model = method.build_model(NUM_CLASSES)
        assert model.get_layer("block1_1_conv").compute_dtype == "bfloat16"
        centers = model.get_layer("center_loss").centers
        assert centers.dtype == "float32"
        assert all(w.dtype == "float32" for w in model.weights)
        x = images()
        labels = tf.constant([2, 0, 2, 4, 2, 0], tf.int32)
        with tf.GradientTape() as tape:
            outs = model(x, training=True)
            assert all(o.dtype == "float32" for o in outs), [o.dtype for o in outs]
            named = method.named_outputs(outs)
            terms = method.loss_terms(model, named, labels)
            total = tf.add_n(list(terms.values()))
        for name, value in terms.items():
            assert value.dtype == tf.float32 and np.isfinite(float(value)), name
        grads = tape.gradient(total, model.trainable_weights)
        assert all(g is not None and np.all(np.isfinite(arr(tf.convert_to_tensor(g))))
                   for g in grads)
        before = arr(centers).copy()
        method.before_optimizer_step(model, named, labels)
        assert not np.array_equal(arr(centers), before)
        outs = model(x, training=False)
        assert [o.dtype for o in outs] == ["float32"] * 4
        assert [tuple(o.shape) for o in outs] == [(BATCH, NUM_CLASSES), (BATCH, NUM_CLASSES),
                                                  (BATCH, NUM_BITS),
                                                  (BATCH, NUM_BITS * CODE_LENGTH)]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"
