"""Every custom layer of the project (registered as ``face_hashing>Name``): its config holds
every constructor argument, rebuilds an equal layer, and a model holding it saves to
``.keras`` and loads back computing the same outputs.

Parametrised over what Keras has registered once the shared layers and every registered
method's layers are imported: a new layer is checked as soon as it exists, and the test
fails until it has an example below (constructor arguments other than the defaults where
the layer allows them, so that a forgotten ``get_config`` entry shows as a changed value).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import keras
import numpy as np
import pytest

from common.methods import registry

PACKAGE = "face_hashing"

# layer name -> (constructor arguments, one input's shape)
EXAMPLES = {
    "BlockHash": ({"num_bits": 4, "code_length": 3}, (12,)),
    "StraightThroughSign": ({"clip_gradient": True}, (6,)),
    "CenterLoss": ({"num_classes": 3, "reduction": "mean", "trainable_centers": False}, (5,)),
    "LocallyConnected2D": ({"filters": 2, "kernel_size": 2, "use_bias": False}, (4, 4, 3)),
    "DivideAndEncode": ({"num_bits": 3, "split_num": 2}, (6,)),
    "DDAHChannelAttention": ({"hidden_units": 4, "epsilon": 1e-3}, (4, 4, 3)),
    "ChannelsFirstFlatten": ({}, (2, 2, 3)),
    "MinMaxNormalization": ({"epsilon": 1e-3}, (4, 4, 2)),
    "DDAHSpatialAttention": ({"filters": 4, "unused_bn3": True, "epsilon": 1e-3}, (8, 8, 3)),
    "TorchConvTranspose2D": ({"filters": 2, "kernel_size": 3, "strides": 2, "padding": 1,
                              "output_padding": 1, "use_bias": False}, (4, 4, 3)),
    "DiscreteHash": ({"backward": "clipped", "binary": False}, (6,)),
    "DiscreteIdentityHead": ({"num_classes": 3, "scale": 8.0}, (6,)),
    "SpatialGate": ({"kernel_size": 5}, (6, 6, 3)),
}


def _import_layer_modules() -> None:
    """Import common.layers and every registered method package's layer modules."""
    packages = {"common"} | {registry.settings_class(m).__module__.split(".")[0]
                             for m in registry.method_names()}
    for name in sorted(packages):
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if ".layers" in info.name:
                importlib.import_module(info.name)


def _registered() -> dict[str, type]:
    _import_layer_modules()
    return {key.split(">", 1)[1]: cls for key, cls in keras.saving.get_custom_objects().items()
            if key.startswith(f"{PACKAGE}>") and isinstance(cls, type)
            and issubclass(cls, keras.layers.Layer)}


LAYERS = _registered()


def test_every_registered_layer_has_an_example_and_no_example_is_stale():
    assert len(LAYERS) >= 13, sorted(LAYERS)  # the project's layers when this test was written
    assert sorted(LAYERS) == sorted(EXAMPLES), set(LAYERS) ^ set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_holds_every_constructor_argument_and_rebuilds_the_layer(name):
    cls, (kwargs, _) = LAYERS[name], EXAMPLES[name]
    layer = cls(**kwargs, name=f"my_{name.lower()}")
    config = layer.get_config()
    own = cls.__dict__.get("__init__")  # a layer without one takes Layer's arguments only
    arguments = [] if own is None else [
        p for p, spec in inspect.signature(own).parameters.items()
        if p != "self" and spec.kind not in (spec.VAR_KEYWORD, spec.VAR_POSITIONAL)]
    assert set(arguments) <= set(config), set(arguments) - set(config)
    for key, value in kwargs.items():  # the values given, not the defaults
        # a size may be recorded in its normal form: 2 -> [2, 2] (as Keras' own layers do)
        assert config[key] in (value, [value, value], (value, value)), (key, config[key])
    assert config["name"] == f"my_{name.lower()}"
    again = cls.from_config(config)
    assert type(again) is cls and again.get_config() == config


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_model_holding_the_layer_saves_and_loads_with_the_same_outputs(name, tmp_path):
    """Random weights (so that nothing passes by an initial value) and random inputs in
    -1..1; loaded in the same process, so the same kernels: the outputs are equal exactly."""
    cls, (kwargs, shape) = LAYERS[name], EXAMPLES[name]
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, cls(**kwargs)(inputs))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.uniform(-1, 1, weight.shape).astype(weight.dtype))
    x = rng.uniform(-1, 1, (3, *shape)).astype("float32")
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                  np.asarray(model(x, training=False)))
