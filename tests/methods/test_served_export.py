"""Every registered method's export of a trained run (common.training.saved_run.export_run,
common.export.writer) records the run and serves, in a fresh process that never saw Keras
or this package, the codes its Keras model computes; its ``model.keras`` loads back to the
same model.

One tiny run per method (4 synthetic identities, the method's
:data:`tiny_training.TINY_SETTINGS`, 2 epochs of 2 steps), trained through the shared loop
in this process and exported once, is shared by the module's tests.

Tolerances. The served relaxed codes are compared with the in-process Keras ones within
1e-5: the served graph runs in another process, where TensorFlow may fuse operations and
oneDNN chooses its kernels (and so the order of its float additions) per CPU and per
graph. So a binary code, the sign of its relaxed value, may differ where that value lies
within 1e-5 of 0: ``fresh_process.assert_served_codes`` compares the codes only where the
relaxed value is farther than that from 0 (and asks that at least 90% are), which is what
makes the test hold on any x86-64 CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fresh_process import assert_served_codes, serve_in_fresh_process
from tiny_training import synthetic_split, tiny_settings

from common.export.folder import EXPORT_INFO, KERAS_FILE
from common.methods import registry
from common.methods.base import CODES
from common.runs.run_config import RUN_CONFIG

METHODS = registry.method_names()
ATOL = 1e-5
IMAGES = 9

pytestmark = [pytest.mark.slow,   # a training, an export and a fresh TensorFlow per method
              pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 identities x (4 train + 2 test), for every method's run."""
    return synthetic_split(tmp_path_factory.mktemp("served") / "data", 4, 4, 2)


@pytest.fixture(scope="module", params=METHODS)
def exported(request, tiny_data, tmp_path_factory):
    """Method ``request.param`` trained for 2 epochs, its ``best_map`` slot exported."""
    from common.training.loop import TrainConfig, train
    from common.training.saved_run import export_run

    name = request.param
    work = tmp_path_factory.mktemp(f"served_{name}")
    method_class = registry.method_class(name)
    config = TrainConfig(epochs=2, model_dir=str(work / "run"), batch_size=8, eval_every=0,
                         log_every_steps=0)
    report = train(method_class(**tiny_settings(name)), tiny_data, config)
    info = export_run(method_class, str(work / "run"), str(work / "export"), "best_map")
    return method_class, work / "run", work / "export", report, info


@pytest.fixture(scope="module")
def keras_codes(exported):
    """Random 0..255 images, and the relaxed codes (with every named output) the run's
    ``best_map`` model gives them in this process."""
    from common.training.saved_run import load_run

    method_class, model_dir, _, _, _ = exported
    raw = np.random.default_rng(7).integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8)
    run = load_run(method_class, str(model_dir), "best_map")
    x = run.normalization.apply(raw.astype(np.float32))
    inference = run.method.inference_model(run.model)
    outputs = [np.asarray(o) for o in inference(x, training=False)]
    names = list(run.method.output_names)
    return raw, x, dict(zip(names, outputs)), names.index(CODES)


def test_the_export_records_the_run_and_its_slot(exported):
    method_class, model_dir, export_dir, report, info = exported
    with open(model_dir / RUN_CONFIG) as f:
        recorded = json.load(f)["method"]
    assert info["method"] == recorded and info["method"]["method"] == method_class.name
    assert info["num_bits"] == recorded["num_bits"] == 12
    assert info["num_classes"] == 4
    assert info["checkpoint"]["slot"] == "best_map"
    assert info["checkpoint"]["epoch"] == report["best_map"]["epoch"]
    with open(export_dir / EXPORT_INFO) as f:
        assert json.load(f) == info


def test_the_export_serves_the_keras_codes_in_a_fresh_process(exported, keras_codes,
                                                              tmp_path):
    _, _, export_dir, _, info = exported
    raw, _, named, _ = keras_codes
    relaxed = named[CODES]
    bits = info["num_bits"]
    assert relaxed.shape == (IMAGES, bits)
    if "codes" in named:   # a model with a codes output of its own (DDCH): sign, 0 -> +1
        np.testing.assert_array_equal(named["codes"], np.where(relaxed >= 0, 1, -1))

    served = serve_in_fresh_process(export_dir, raw, tmp_path)
    assert set(served) == {"codes", "packed", "relaxed"}
    assert served["codes"].shape == (IMAGES, bits)
    assert served["packed"].dtype == np.uint8 and served["packed"].shape == (IMAGES, -(-bits // 8))
    assert_served_codes(served, relaxed, atol=ATOL)


def test_the_keras_file_loads_back_to_the_same_codes(exported, keras_codes):
    import keras

    export_dir = exported[2]
    _, x, named, position = keras_codes
    reloaded = keras.saving.load_model(str(export_dir / KERAS_FILE))
    assert len(reloaded.outputs) == len(named)   # the inference part (DDAH: pass a alone)
    np.testing.assert_allclose(np.asarray(reloaded(x, training=False)[position]), named[CODES],
                               rtol=0, atol=ATOL)
