"""The DAGH network (dagh_tf.model) against a hand count of its weights and its graph, its
loss terms (dagh_tf.losses) against numpy, and the DAGH method's settings, loss parts,
optimiser group and schedule (dagh_tf.method)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import cross_entropy, sign
from tiny_networks import arr, count

from dagh_tf import losses
from dagh_tf.layers import DiscreteHash, DiscreteIdentityHead, SpatialGate
from dagh_tf.method import DAGH
from dagh_tf.model import OUTPUT_NAMES, build_dagh

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
              pytest.mark.usefixtures("seeded_weights")]


SMALL = dict(num_classes=5, num_bits=8, width_multiplier=0.125)   # widths / 8


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)


# --------------------------------------------------------------------------- the weight count
def hand_count(num_classes: int = 530, bits: int = 48, attention: str = "cascade",
               identity_head: str = "discrete", gate_kernel: int = 3) -> dict:
    """Trainable weights of DAGH at width 1 (conv / dense kernel + bias, BN gamma + beta).

    DDAH's spatial attention (f = 32, no bn3), 32x32x3 input:
        encoder  Conv(3, 32, 2) + BN(32), Conv(32, 64, 2) + BN(64), Conv(64, 128, 2) + BN(128)
        bottleneck Conv(128, 128, 1) + BN(128)
        decoder  ConvT(128, 64, 3) + BN(64), ConvT(64, 32, 3) + BN(32), ConvT(32, 16, 3)
        mask     Conv(16, 1, 1)                                          = 155,873
    Convolutions (32 -> 30 -> pool 15 -> 14 -> pool 7 -> 6 -> pool 3 -> conv4 2):
        Conv(3, 32, 3) + BN(32), Conv(32, 64, 2) + BN(64), Conv(64, 128, 2) + BN(128),
        conv4 Conv(128, 256, 2) + BN(256)                                 = 174,336
    Channel attentions (DDAH's MLPs): 1152 -> 512 -> 128 and 1024 -> 512 -> 256
                                                                   656,000 + 656,128
    Spatial gates (cascade only): Conv(2, 1, k) each, k = 3: 19 (x 2)        38
    Face features Dense(2176, 1024) + BN(1024)                          2,231,296
    Hash          Dense(1024, bits) + BN(bits)                             49,296
    Discrete hash layer                                                         0
    Identity head: discrete (classes, bits) centers, no bias               25,440
                   softmax  Dense(bits, classes) with bias                 25,970
    Cascade + discrete head, 530 classes, 48 bits: 3,948,407.
    """
    conv = lambda i, o, k: i * o * k * k + o
    bn = lambda c: 2 * c
    dense = lambda i, o: i * o + o
    spatial_attention = (conv(3, 32, 2) + bn(32) + conv(32, 64, 2) + bn(64)
                         + conv(64, 128, 2) + bn(128) + conv(128, 128, 1) + bn(128)
                         + conv(128, 64, 3) + bn(64) + conv(64, 32, 3) + bn(32)
                         + conv(32, 16, 3) + conv(16, 1, 1))
    convs = (conv(3, 32, 3) + bn(32) + conv(32, 64, 2) + bn(64) + conv(64, 128, 2) + bn(128)
             + conv(128, 256, 2) + bn(256))
    f3, f4 = 128 * 3 * 3, 256 * 2 * 2
    channel_attention = dense(f3, 512) + dense(512, 128) + dense(f4, 512) + dense(512, 256)
    spatial_gates = 2 * conv(2, 1, gate_kernel) if attention == "cascade" else 0
    face = dense(f3 + f4, 1024) + bn(1024)
    hash_layer = dense(1024, bits) + bn(bits)
    discrete_hash = 0
    head = num_classes * bits if identity_head == "discrete" else dense(bits, num_classes)
    parts = {"spatial_attention": spatial_attention, "convs": convs,
             "channel_attention": channel_attention, "spatial_gates": spatial_gates,
             "face": face, "hash": hash_layer, "discrete_hash": discrete_hash,
             "identity_head": head}
    parts["total"] = sum(parts.values())
    return parts


def test_hand_count_terms():
    parts = hand_count()
    assert parts["spatial_attention"] == 155_873                 # DDAH's attention branch
    assert parts["channel_attention"] == 656_000 + 656_128
    assert parts["spatial_gates"] == 38 and hand_count(gate_kernel=1)["spatial_gates"] == 6
    assert parts["identity_head"] == 25_440
    assert hand_count(identity_head="softmax")["identity_head"] == 25_970
    assert parts["total"] == 3_948_407
    # DDAH's 3,948,899 = the same pieces, its classifier with bias (25,970), no gates.
    assert hand_count(attention="parallel", identity_head="softmax")["total"] == 3_948_899


@pytest.mark.parametrize("attention, identity_head, hash_layer", [
    ("cascade", "discrete", "discrete"),
    ("cascade", "softmax", "discrete"),
    ("parallel", "discrete", "discrete"),
    ("parallel", "softmax", "discrete"),
    ("cascade", "discrete", "tanh"),          # the tanh ablation changes no weight
])
def test_weight_count_at_width_one(attention, identity_head, hash_layer):
    model = build_dagh(530, 48, 1.0, attention=attention, hash_layer=hash_layer,
                       identity_head=identity_head)
    parts = hand_count(530, 48, attention, identity_head)
    assert count(model.trainable_variables) == parts["total"]
    assert count(model.get_layer("spatial_attention").trainable_variables) == \
        parts["spatial_attention"]
    assert count(model.get_layer("identity_head").trainable_variables) == parts["identity_head"]
    assert model.get_layer("discrete_hash").weights == []
    head = model.get_layer("identity_head")
    if identity_head == "discrete":
        assert isinstance(head, DiscreteIdentityHead)
        assert [tuple(v.shape) for v in head.trainable_variables] == [(530, 48)]
    else:
        assert isinstance(head, keras.layers.Dense) and head.use_bias
        assert [tuple(v.shape) for v in head.trainable_variables] == [(48, 530), (530,)]
    if attention == "cascade":
        for stage in ("stage3_spatial", "stage4_spatial"):
            gate = model.get_layer(stage)
            assert isinstance(gate, SpatialGate)
            assert [tuple(v.shape) for v in gate.trainable_variables] == [(3, 3, 2, 1), (1,)]
    else:
        assert not any(isinstance(layer, SpatialGate) for layer in model.layers)
    # BN moving statistics: non-trainable, 2 x channels (attention + convs + dense BNs).
    assert count(model.non_trainable_variables) == 2 * (
        (32 + 64 + 128 + 128 + 64 + 32) + (32 + 64 + 128 + 256 + 1024 + 48))


# --------------------------------------------------------------------------- outputs and graph
@pytest.fixture(scope="module")
def small():
    model = build_dagh(**SMALL)
    return model, images(6)


def test_outputs_names_shapes_and_dtypes(small):
    model, x = small
    assert list(model.output_names) == list(OUTPUT_NAMES) == ["logits", "relaxed_codes"]
    assert [tuple(o.shape) for o in model.outputs] == [(None, 5), (None, 8)]
    for training in (False, True):
        logits, relaxed = model(x, training=training)
        assert tuple(logits.shape) == (6, 5) and tuple(relaxed.shape) == (6, 8)
        assert logits.dtype == tf.float32 and relaxed.dtype == tf.float32
        assert np.isfinite(arr(logits)).all() and np.isfinite(arr(relaxed)).all()


def test_codes_are_the_sign_of_the_relaxed_codes(small):
    model, x = small
    probe = keras.Model(model.input, [model.get_layer("discrete_hash").output,
                                      model.get_layer("relaxed_codes").output])
    codes, relaxed = (arr(t) for t in probe(x, training=False))
    np.testing.assert_array_equal(codes, sign(relaxed))
    np.testing.assert_array_equal(arr(model(x, training=False)[1]), relaxed)


def test_discrete_logits_are_scaled_hamming_similarities(small):
    model, x = small
    logits, relaxed = (arr(t) for t in model(x, training=False))
    bits, scale = 8, model.get_layer("identity_head").scale
    assert scale == 16.0
    similarity = logits / scale
    assert (similarity >= -1 - 1e-6).all() and (similarity <= 1 + 1e-6).all()
    steps = similarity * bits / 2                            # multiples of 2 / K
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-5)
    centers = sign(arr(model.get_layer("identity_head").centers))
    distance = (sign(relaxed)[:, None, :] != centers[None, :, :]).sum(axis=-1)
    np.testing.assert_allclose(logits, scale * (1 - 2 * distance / bits), rtol=1e-6, atol=1e-5)


def test_other_scale_and_odd_bits_stay_on_the_grid():
    model = build_dagh(4, 7, 0.125, scale=10.0, backward="clipped", gate_kernel=1)
    assert model.get_layer("discrete_hash").backward == "clipped"
    assert model.get_layer("stage3_spatial").kernel_size == 1
    logits, relaxed = (arr(t) for t in model(images(3, seed=2), training=False))
    centers = sign(arr(model.get_layer("identity_head").centers))
    distance = (sign(relaxed)[:, None, :] != centers[None, :, :]).sum(axis=-1)
    np.testing.assert_allclose(logits, 10.0 * (1 - 2 * distance / 7), rtol=1e-6, atol=1e-5)


def test_cascade_feeds_refined_maps_forward(small):
    model, _ = small
    layer = model.get_layer
    assert layer("stage3_channel").input is layer("pool3").output
    assert layer("stage3_spatial").input is layer("stage3_channel").output
    assert layer("conv4_conv").input is layer("stage3_spatial").output      # the cascade
    assert layer("stage4_channel").input is layer("conv4_relu").output
    assert layer("stage4_spatial").input is layer("stage4_channel").output
    assert layer("flatten_3").input is layer("stage3_spatial").output
    assert layer("flatten_4").input is layer("stage4_spatial").output
    assert layer("conv1_conv").input is layer("spatial_attention").output


def test_parallel_attends_unrefined_maps():
    model = build_dagh(**SMALL, attention="parallel")
    layer = model.get_layer
    assert layer("conv4_conv").input is layer("pool3").output                # DDAH's layout
    assert layer("stage3_channel").input is layer("pool3").output
    assert layer("stage4_channel").input is layer("conv4_relu").output
    assert layer("flatten_3").input is layer("stage3_channel").output
    assert layer("flatten_4").input is layer("stage4_channel").output
    for name in ("stage3_spatial", "stage4_spatial"):
        with pytest.raises(ValueError):
            layer(name)


def test_ablations_change_the_right_layers():
    tanh = build_dagh(**SMALL, hash_layer="tanh", identity_head="softmax")
    assert tanh.get_layer("discrete_hash").binary is False
    assert isinstance(tanh.get_layer("identity_head"), keras.layers.Dense)
    probe = keras.Model(tanh.input, [tanh.get_layer("discrete_hash").output,
                                     tanh.get_layer("relaxed_codes").output])
    codes, relaxed = (arr(t) for t in probe(images(4), training=False))
    np.testing.assert_allclose(codes, np.tanh(relaxed.astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert isinstance(tanh.get_layer("discrete_hash"), DiscreteHash)


def test_gradients_reach_every_variable_through_the_discrete_layer(small):
    """The straight-through backward lets the identity loss reach the layers before the
    hash layer (sign alone would give them zero gradient)."""
    model, x = small
    labels = tf.constant([0, 1, 2, 3, 4, 0])
    with tf.GradientTape() as tape:
        logits, _ = model(x, training=True)
        loss = losses.discrete_identity_loss(labels, logits, 16.0)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    by_name = {v.path: arr(g) for v, g in zip(model.trainable_variables, grads)}
    assert np.abs(by_name["hash/kernel"]).max() > 0
    assert np.abs(by_name["identity_head/centers"]).max() > 0


def test_keras_file_round_trip(small, tmp_path):
    model, x = small
    model.save(tmp_path / "dagh.keras")
    loaded = keras.models.load_model(tmp_path / "dagh.keras")
    assert isinstance(loaded.get_layer("stage3_spatial"), SpatialGate)
    for got, want in zip(loaded(x, training=False), model(x, training=False)):
        np.testing.assert_array_equal(arr(got), arr(want))


def test_bad_model_arguments():
    for kwargs, message in ((dict(attention="x"), "attention"),
                            (dict(hash_layer="x"), "hash_layer"),
                            (dict(identity_head="x"), "identity_head"),
                            (dict(num_classes=1), "num_classes"),
                            (dict(num_bits=0), "num_bits"),
                            (dict(width_multiplier=0), "width_multiplier")):
        with pytest.raises(ValueError, match=message):
            build_dagh(**{**SMALL, **kwargs})


# --------------------------------------------------------------------------- losses
def test_discrete_identity_loss_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.uniform(-16, 16, (7, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 7)
    for scale, margin in ((16.0, 0.2), (10.0, 0.5), (16.0, 1.9), (4.0, 0.0)):
        shifted = logits.astype(np.float64) - scale * margin * np.eye(6)[labels]
        got = float(losses.discrete_identity_loss(tf.constant(labels), tf.constant(logits),
                                                  scale, margin))
        assert got == pytest.approx(cross_entropy(labels, shifted), rel=1e-5, abs=1e-6)
    default = float(losses.discrete_identity_loss(labels, logits, 16.0))
    shifted = logits.astype(np.float64) - 16.0 * 0.2 * np.eye(6)[labels]
    assert losses.MARGIN == 0.2
    # s = K / 3: a logit step of 2/3 per bit of Hamming distance at every code length.
    assert [losses.default_scale(k) for k in (12, 24, 36, 48)] == [4.0, 8.0, 12.0, 16.0]
    assert [DAGH(num_bits=k).scale for k in (12, 48)] == [4.0, 16.0]
    assert DAGH(num_bits=48, scale=5.0).scale == 5.0
    assert default == pytest.approx(cross_entropy(labels, shifted), rel=1e-5)
    # (batch, 1) labels are accepted; margin 0 is the plain cross-entropy.
    plain = float(losses.discrete_identity_loss(labels.reshape(-1, 1), logits, 16.0, 0.0))
    assert plain == pytest.approx(cross_entropy(labels, logits), rel=1e-5)
    assert plain == pytest.approx(float(tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))), rel=1e-6)
    assert default > plain                                   # the margin costs on the true class


def test_quantization_loss_matches_numpy():
    h = np.random.default_rng(4).normal(scale=1.5, size=(9, 8)).astype(np.float32)
    h[0, :3] = (1.0, -1.0, 0.0)
    want = 0.001 * np.abs(np.abs(h.astype(np.float64)) - 1).sum(axis=1).mean()
    assert float(losses.quantization_loss(h)) == pytest.approx(want, rel=1e-5)
    assert float(losses.quantization_loss(sign(h).astype(np.float32))) == 0.0


# --------------------------------------------------------------------------- the method
def test_method_config_round_trip():
    method = DAGH(num_bits=12, width_multiplier=0.125, attention="parallel", hash_layer="tanh",
                  identity_head="softmax", scale=8.0, margin=0.3, backward="clipped",
                  quantization_weight=0.01, weight_decay=0.0, gate_kernel=1,
                  min_max_epsilon=1e-6, lr_halve_every=50)
    config = method.config()
    assert config["method"] == "dagh" == DAGH.name
    clone = DAGH.from_config(config)
    assert clone.config() == config
    assert DAGH.from_config(DAGH().config()).config() == DAGH().config()
    assert DAGH().config() == {
        "method": "dagh", "num_bits": 48, "width_multiplier": 1.0, "attention": "cascade",
        "hash_layer": "discrete", "identity_head": "discrete", "scale": 16.0, "margin": 0.2,
        "backward": "identity", "quantization_weight": 0.001, "weight_decay": 1e-4,
        "gate_kernel": 3, "min_max_epsilon": 0.0, "lr_halve_every": 100, "passes": 1}
    with pytest.raises(ValueError, match="not 'dagh'"):
        DAGH.from_config({**config, "method": "ddah"})


# Every setting's bad values, refused with the message naming it: tests/methods/test_settings.py.


def test_method_builds_its_model():
    method = DAGH(num_bits=8, width_multiplier=0.125, attention="parallel", gate_kernel=1)
    model = method.build_model(5)
    assert tuple(method.output_names) == OUTPUT_NAMES
    assert [tuple(o.shape) for o in model.outputs] == [(None, 5), (None, 8)]
    assert model.get_layer("conv4_conv").input is model.get_layer("pool3").output


@pytest.fixture(scope="module")
def batch():
    return images(6, seed=5), tf.constant([0, 1, 2, 3, 4, 1])


@pytest.mark.parametrize("identity_head", ["discrete", "softmax"])
def test_loss_terms(identity_head, batch):
    x, labels = batch
    method = DAGH(num_bits=8, width_multiplier=0.125, identity_head=identity_head,
                  scale=12.0, margin=0.25)
    model = method.build_model(5)
    outputs = method.named_outputs(model(x, training=True))
    terms = method.loss_terms(model, outputs, labels)
    assert tuple(terms) == ("identity", "quantization")
    assert method.loss_reductions() == {"identity": "mean", "quantization": "mean"}
    logits = arr(outputs["logits"]).astype(np.float64)
    h = arr(outputs["relaxed_codes"]).astype(np.float64)
    y = arr(labels)
    if identity_head == "discrete":
        want = cross_entropy(y, logits - 12.0 * 0.25 * np.eye(5)[y])
    else:
        want = cross_entropy(y, logits)                    # plain CE, no margin
    assert float(terms["identity"]) == pytest.approx(want, rel=1e-5)
    assert float(terms["quantization"]) == pytest.approx(
        0.001 * np.abs(np.abs(h) - 1).sum(axis=1).mean(), rel=1e-5)


def test_optimizer_group_and_schedule(small):
    model, _ = small
    method = DAGH(num_bits=8, width_multiplier=0.125)
    groups = method.optimizer_groups(model)
    assert len(groups) == 1
    group = groups[0]
    assert group.name == "all" and group.objective is None
    assert group.coupled_weight_decay == 1e-4
    assert len(group.variables) == len(model.trainable_variables)
    assert all(a is b for a, b in zip(group.variables, model.trainable_variables))
    assert DAGH(weight_decay=0.0).optimizer_groups(model)[0].coupled_weight_decay == 0.0
    for epoch, want in ((0, 1e-3), (99, 1e-3), (100, 5e-4), (199, 5e-4), (200, 2.5e-4),
                        (450, 1e-3 / 16), (999, 1e-3 * 0.5 ** 9)):
        assert method.learning_rate(epoch, 1e-3) == want
    assert DAGH(lr_halve_every=10).learning_rate(25, 1e-3) == 2.5e-4
