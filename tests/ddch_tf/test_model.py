"""The DDCH network (ddch_tf.model.build_ddch) against the design in ddch_tf/README.md.

images -> DCBH's backbone and two-scale fusion (common/models/backbone.py) -> feature layer
(Dense no bias -> BN -> ReLU; feature centers) -> hash function (Dense no bias -> BN ->
ReLU -> Dense num_bits no bias -> BN -> tanh = relaxed codes) -> straight-through sign
(+-1 codes; code centers) -> classifier on the codes; a second classifier on the features.

Full-size models are built only for parameter counts and layer configurations (no
forward pass); numerical checks use a narrow backbone (width_multiplier=0.0625).
"""

import re

import keras
import numpy as np
import pytest

from tiny_networks import CONV_FILTERS, arr, count, images, inbound, randomize_batchnorms

from common.layers import CenterLoss, StraightThroughSign
from dcbh_tf.model import build_dcbh
from ddch_tf.model import OUTPUT_NAMES, build_ddch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

TINY_WIDTH = 0.0625
NUM_CLASSES = 5
NUM_BITS = 12
FEATURE_UNITS = 24
HIDDEN_UNITS = 20

HEAD_LAYERS = ("feature_dense", "feature_bn", "feature_relu", "feature_center",
               "hash_hidden_dense", "hash_hidden_bn", "hash_hidden_relu", "hash_dense", "hash_bn",
               "hash_tanh", "discrete_hash", "code_center", "logits", "feature_logits",
               "relaxed_codes", "codes", "features")


def tiny_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = build_ddch(NUM_CLASSES, NUM_BITS, FEATURE_UNITS, HIDDEN_UNITS,
                       width_multiplier=TINY_WIDTH, **kwargs)
    randomize_batchnorms(model, np.random.default_rng(seed))
    return model


def expected_trainable(num_classes, num_bits, feature_units=512, hidden_units=512, width=1.0):
    """Trainable parameters, counted by hand from the architecture in ddch_tf/README.md."""
    widths = [max(1, int(round(f * width))) for f in CONV_FILTERS]
    total, cin = 0, 3
    for cout in widths:
        total += 3 * 3 * cin * cout          # conv kernel, no bias
        total += 2 * cout                    # BN gamma + beta
        cin = cout
    fused = widths[-1] + widths[6]           # GAP(block 4) ++ GAP(block 3)
    total += fused * feature_units + 2 * feature_units             # feature Dense (no bias) + BN
    total += num_classes * feature_units                           # feature centers
    total += feature_units * hidden_units + 2 * hidden_units       # hash hidden Dense + BN
    total += hidden_units * num_bits + 2 * num_bits                # hash Dense + BN
    total += num_classes * num_bits                                # code centers
    total += num_bits * num_classes + num_classes                  # logits (on the codes)
    total += feature_units * num_classes + num_classes             # feature_logits
    return total, widths


@pytest.fixture(scope="module")
def full_311():
    return build_ddch(311, 48)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


# ----------------------------------------------------------------------------- sizes

def test_parameter_count_full_width(full_311):
    expected, widths = expected_trainable(311, 48)
    assert expected == 8_668_974            # the same sum, written out once
    assert count(full_311.trainable_weights) == expected
    # Non-trainable: exactly the BN moving statistics (2 x channels of every BN).
    assert count(full_311.non_trainable_weights) == 2 * (sum(widths) + 512 + 512 + 48)
    paths = [w.path for w in full_311.non_trainable_weights]
    assert all(p.endswith(("moving_mean", "moving_variance")) for p in paths), paths
    assert len(paths) == 2 * (10 + 3)


def test_parameter_count_small_configuration():
    # width 0.1 rounds the filter counts (6, 6, 13, 13, 26, 26, 26, 51, 51, 51)
    model = build_ddch(5, num_bits=12, feature_units=24, hash_hidden_units=16,
                       width_multiplier=0.1)
    expected, widths = expected_trainable(5, 12, 24, 16, width=0.1)
    assert widths == [6, 6, 13, 13, 26, 26, 26, 51, 51, 51]
    assert count(model.trainable_weights) == expected == 80_107
    assert count(model.non_trainable_weights) == 2 * (sum(widths) + 24 + 16 + 12)


def test_two_center_sets_are_trainable_center_loss_layers(full_311):
    feature_center = full_311.get_layer("feature_center")
    code_center = full_311.get_layer("code_center")
    for layer in (feature_center, code_center):
        assert isinstance(layer, CenterLoss)
        assert layer.reduction == "sum" and layer.num_classes == 311
        assert any(w is layer.centers for w in full_311.trainable_weights)
    assert tuple(feature_center.centers.shape) == (311, 512)
    assert tuple(code_center.centers.shape) == (311, 48)
    assert feature_center.centers.path != code_center.centers.path


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=1), "num_classes must be >= 2, got 1"),
    (dict(num_classes=0), "num_classes must be >= 2, got 0"),
    (dict(num_bits=0), "num_bits must be >= 1, got 0"),
    (dict(feature_units=0), "feature_units must be >= 1, got 0"),
    (dict(hash_hidden_units=0), "hash_hidden_units must be >= 1, got 0"),
    (dict(width_multiplier=0.0), "width_multiplier must be > 0, got 0.0"),
])
def test_rejects_bad_arguments(kwargs, message):
    """Refused by DDCH's own checks, with their words (Keras' Dense would also refuse a
    zero width, in other words, so a bare ValueError would not show the checks work)."""
    args = dict(num_classes=NUM_CLASSES, num_bits=NUM_BITS, width_multiplier=TINY_WIDTH)
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        build_ddch(**args)


# ----------------------------------------------------------------------------- architecture

def test_outputs_order_names_shapes_and_dtypes(full_311, tiny):
    assert OUTPUT_NAMES == ("logits", "feature_logits", "relaxed_codes", "codes", "features")
    out_layers = [t._keras_history.operation.name for t in full_311.outputs]
    assert out_layers == list(OUTPUT_NAMES)
    shapes = [tuple(t.shape) for t in full_311.outputs]
    assert shapes == [(None, 311), (None, 311), (None, 48), (None, 48), (None, 512)]
    assert tuple(full_311.inputs[0].shape) == (None, 32, 32, 3)
    outs = tiny(images(n=3), training=False)
    assert [tuple(o.shape) for o in outs] == [(3, NUM_CLASSES), (3, NUM_CLASSES), (3, NUM_BITS),
                                              (3, NUM_BITS), (3, FEATURE_UNITS)]
    assert [keras.backend.standardize_dtype(o.dtype) for o in outs] == ["float32"] * 5


def test_backbone_is_dcbhs(full_311):
    """Every layer up to the fusion has DCBH's name, type and configuration."""
    dcbh = build_dcbh(311)
    names = []
    for layer in dcbh.layers:
        names.append(layer.name)
        if layer.name == "multiscale_fusion":
            break
    assert "block4_3_conv" in names and "block3_gap" in names
    assert len(names) == 1 + 3 * 10 + 4 + 2 + 1        # input, conv/bn/relu x10, pools, GAPs
    for name in names:
        a, b = dcbh.get_layer(name), full_311.get_layer(name)
        assert type(a) is type(b), name
        ca, cb = a.get_config(), b.get_config()
        assert ca == cb, name
    assert sorted(l.name for l in full_311.layers) == sorted(names + list(HEAD_LAYERS))
    assert inbound(full_311, "multiscale_fusion") == ["block4_gap", "block3_gap"]
    assert tuple(full_311.get_layer("multiscale_fusion").output.shape) == (None, 768)


def test_head_connectivity(full_311):
    model = full_311
    head = [("feature_dense", "multiscale_fusion"), ("feature_bn", "feature_dense"),
            ("feature_relu", "feature_bn"), ("feature_center", "feature_relu"),
            ("hash_hidden_dense", "feature_center"), ("hash_hidden_bn", "hash_hidden_dense"),
            ("hash_hidden_relu", "hash_hidden_bn"), ("hash_dense", "hash_hidden_relu"),
            ("hash_bn", "hash_dense"), ("hash_tanh", "hash_bn"), ("discrete_hash", "hash_tanh"),
            ("code_center", "discrete_hash"),
            ("logits", "code_center"),                  # classification on the binary codes
            ("feature_logits", "feature_center"),
            ("relaxed_codes", "hash_tanh"), ("codes", "code_center"),
            ("features", "feature_center")]
    for name, src in head:
        assert inbound(model, name) == [src], name


def test_head_layer_configuration(full_311):
    model = full_311
    for name, units, bias in (("feature_dense", 512, False), ("hash_hidden_dense", 512, False),
                              ("hash_dense", 48, False), ("logits", 311, True),
                              ("feature_logits", 311, True)):
        layer = model.get_layer(name)
        assert isinstance(layer, keras.layers.Dense), name
        cfg = layer.get_config()
        assert cfg["units"] == units and cfg["use_bias"] is bias, name
        assert cfg["activation"] == "linear", name
        assert cfg["kernel_initializer"]["class_name"] == "GlorotUniform", name
    assert tuple(model.get_layer("logits").kernel.shape) == (48, 311)
    assert tuple(model.get_layer("feature_logits").kernel.shape) == (512, 311)
    assert tuple(model.get_layer("feature_dense").kernel.shape) == (768, 512)
    for name in ("feature_bn", "hash_hidden_bn", "hash_bn"):
        cfg = model.get_layer(name).get_config()
        assert cfg["momentum"] == pytest.approx(0.9) and cfg["epsilon"] == pytest.approx(1e-3)
        assert cfg["center"] is True and cfg["scale"] is True
    assert model.get_layer("hash_tanh").get_config()["activation"] == "tanh"
    sign = model.get_layer("discrete_hash")
    assert isinstance(sign, StraightThroughSign) and sign.clip_gradient is False


# ----------------------------------------------------------------------------- numerics

def _bn(layer, x):
    g, b, mm, mv = (arr(v, np.float64) for v in
                    (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
    return (x - mm) / np.sqrt(mv + 1e-3) * g + b


def test_head_forward_numerics(tiny):
    """Inference-mode head vs numpy, from the fused descriptor on."""
    model = tiny
    x = images(seed=3)
    probe = keras.Model(model.input, model.get_layer("multiscale_fusion").output)
    fused = arr(probe(x, training=False), np.float64)
    logits, feature_logits, relaxed, codes, features = (arr(o, np.float64)
                                                        for o in model(x, training=False))

    def k(name):
        return arr(model.get_layer(name).kernel, np.float64)

    f = np.maximum(_bn(model.get_layer("feature_bn"), fused @ k("feature_dense")), 0)
    np.testing.assert_allclose(features, f, rtol=1e-4, atol=1e-5)
    h = np.maximum(_bn(model.get_layer("hash_hidden_bn"), f @ k("hash_hidden_dense")), 0)
    r = np.tanh(_bn(model.get_layer("hash_bn"), h @ k("hash_dense")))
    np.testing.assert_allclose(relaxed, r, rtol=1e-4, atol=1e-5)
    b = np.where(relaxed >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(codes, b)
    np.testing.assert_allclose(logits, b @ k("logits") + arr(model.get_layer("logits").bias),
                               rtol=1e-5, atol=1e-5)
    bias = arr(model.get_layer("feature_logits").bias)
    np.testing.assert_allclose(feature_logits, features @ k("feature_logits") + bias,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_codes_are_the_sign_of_relaxed_codes(tiny, training):
    _, _, relaxed, codes, _ = (arr(o) for o in tiny(images(seed=4, n=16), training=training))
    assert set(np.unique(codes)) <= {-1.0, 1.0}
    assert (codes == 1).any() and (codes == -1).any()
    np.testing.assert_array_equal(codes, np.where(relaxed >= 0, 1.0, -1.0))
    assert relaxed.min() >= -1.0 and relaxed.max() <= 1.0


def test_zero_maps_to_plus_one_and_saturation_stays_in_range():
    """hash_bn set so that bits 0-3 are exactly 0, 4-7 slightly negative, 8+ saturated."""
    model = tiny_model(seed=2)
    bn = model.get_layer("hash_bn")
    gamma = np.full(NUM_BITS, 1e4, np.float32)
    beta = np.zeros(NUM_BITS, np.float32)
    gamma[:8] = 0.0
    beta[4:8] = -1e-3
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    _, _, relaxed, codes, _ = (arr(o) for o in model(images(seed=5), training=False))
    assert np.all(relaxed[:, :4] == 0.0)
    np.testing.assert_array_equal(codes[:, :4], 1.0)            # sign(0) -> +1
    assert np.all(relaxed[:, 4:8] < 0)
    np.testing.assert_array_equal(codes[:, 4:8], -1.0)
    assert np.all(np.abs(relaxed[:, 8:]) > 0.99)                 # saturated tanh
    assert relaxed.min() >= -1.0 and relaxed.max() <= 1.0
    np.testing.assert_array_equal(codes, np.where(relaxed >= 0, 1.0, -1.0))


# ----------------------------------------------------------------------------- serialization

def _randomize_centers(model, seed):
    rng = np.random.default_rng(seed)
    for name in ("feature_center", "code_center"):
        c = model.get_layer(name).centers
        c.assign(rng.normal(size=tuple(c.shape)).astype(np.float32))


def test_from_config_round_trip():
    model = tiny_model(seed=1, center_reduction="mean")
    _randomize_centers(model, 8)
    clone = keras.Model.from_config(model.get_config())
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    clone.set_weights(model.get_weights())
    x = images(seed=6)
    for a, b in zip(model(x, training=False), clone(x, training=False)):
        np.testing.assert_array_equal(arr(a), arr(b))
    for name in ("feature_center", "code_center"):
        assert isinstance(clone.get_layer(name), CenterLoss)
        assert clone.get_layer(name).reduction == "mean"


def test_keras_file_round_trip(tmp_path):
    model = tiny_model(seed=1)
    _randomize_centers(model, 7)
    x = images(seed=5)
    before = [arr(o) for o in model(x, training=False)]
    path = tmp_path / "ddch.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("discrete_hash"), StraightThroughSign)
    after = [arr(o) for o in loaded(x, training=False)]
    assert len(after) == 5
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    for name in ("feature_center", "code_center"):
        assert isinstance(loaded.get_layer(name), CenterLoss)
        assert loaded.get_layer(name).reduction == "sum"
        np.testing.assert_array_equal(arr(loaded.get_layer(name).centers),
                                      arr(model.get_layer(name).centers))
    assert count(loaded.trainable_weights) == count(model.trainable_weights)
    assert count(loaded.non_trainable_weights) == count(model.non_trainable_weights)
