"""Every registered method learns through the shared loop: a short run lowers its loss in
every stage, fits its training identities, and its codes retrieve far better than chance;
the run's files record the method that trained.

One run per method (8 synthetic identities x (20 train + 4 test), 12 epochs of 5 steps,
batch 32 reshuffled with seed 0, 48 bits, a 1/8-wide backbone where the method has a width,
DFH's first 4 epochs on features), shared by the module's tests. A new method is checked as
soon as it is registered. Each run took 5-16 s on the 2-core development machine.

Measured (seeds 0, 1, 2; chance mAP 0.151, the exact expectation of a random ranking):

======  ===========================  ===================  =====================
method  last / first loss per stage  final train accuracy best_map mAP
======  ===========================  ===================  =====================
dcbh    0.29, 0.33, 0.30             1.0, 0.99, 0.99      0.482, 0.519, 0.531
ddch    0.048, 0.055, 0.057          1.0, 0.99, 0.99      0.838, 0.923, 0.808
ddh     0.106, 0.101, 0.116          1.0, 1.0, 1.0        0.466, 0.568, 0.481
ddah    0.073, 0.090, 0.087          1.0, 0.99, 0.99      0.520, 0.422, 0.570
dagh    0.029, 0.058, 0.092          0.99, 0.99, 0.95     0.451, 0.481, 0.445
dfh     0.07 / 0.37, 0.08 / 0.33,    1.0, 1.0, 1.0        0.792, 0.898, 0.874
        0.04 / 0.35 (features/codes)
======  ===========================  ===================  =====================

The bounds below sit well outside these ranges (loss ratio < 0.5, accuracy > 0.9, mAP above
0.3 and twice chance), so they hold on any CPU's kernels yet fail for a method that does not
learn (a broken gradient leaves the loss flat and the mAP near 0.15).
"""

from __future__ import annotations

import json

import pytest

from tiny_training import chance_map, settings_it_has, synthetic_split

from common.methods import registry
from common.runs.run_config import RUN_CONFIG
from common.training.reporting import METRICS, read_history

METHODS = registry.method_names()
EPOCHS = 12

# The settings of the learning runs, for the methods that have them (the others keep
# their defaults: DDH's network has no width).
LEARNING_SETTINGS = {"num_bits": 48, "width_multiplier": 0.125, "feature_epochs": 4}

pytestmark = [pytest.mark.slow,   # a 12-epoch training per method
              pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    """8 identities x (20 train + 4 test)."""
    return synthetic_split(tmp_path_factory.mktemp("learn") / "data", 8, 20, 4)


@pytest.fixture(scope="module", params=METHODS)
def learned(request, learn_data, tmp_path_factory):
    """Method ``request.param`` trained for 12 epochs: (method, run folder, report)."""
    from common.training.loop import TrainConfig, train

    name = request.param
    method = registry.method_class(name)(**settings_it_has(name, LEARNING_SETTINGS))
    model_dir = tmp_path_factory.mktemp(f"learned_{name}") / "run"
    config = TrainConfig(epochs=EPOCHS, model_dir=str(model_dir), batch_size=32, shuffle=True,
                         eval_every=0, log_every_steps=0, seed=0)
    return method, model_dir, train(method, learn_data, config)


def test_the_loss_falls_in_every_stage(learned):
    method, model_dir, _ = learned
    history = read_history(str(model_dir))
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    stages = [int(method.stage(epoch)) for epoch in range(EPOCHS)]
    assert [h.get("stage", 0) for h in history] == stages
    for stage in sorted(set(stages)):
        losses = [h["loss"] for h, s in zip(history, stages) if s == stage]
        assert len(losses) >= 3, stage       # long enough a stage to show learning
        assert losses[-1] < 0.5 * losses[0], (stage, losses)      # measured <= 0.37 x
    for h in history:                         # the logged parts are the loss, every epoch
        assert sum(h["loss_parts"].values()) == pytest.approx(h["loss"], rel=1e-5), h


def test_the_training_identities_are_fitted(learned):
    _, model_dir, _ = learned
    assert read_history(str(model_dir))[-1]["accuracy"] > 0.9       # measured >= 0.95


def test_the_codes_retrieve_far_better_than_chance(learned, learn_data):
    _, _, report = learned
    chance = chance_map(learn_data)
    assert 0.1 < chance < 0.2
    best = report["best_map"]["map"]
    assert best > 0.3 and best > 2 * chance, (best, chance)          # measured >= 0.42
    assert best >= max(report["last"]["map"], report["best_loss"]["map"])


def test_the_run_records_the_method(learned):
    method, model_dir, _ = learned
    with open(model_dir / METRICS) as f:
        metrics = json.load(f)
    with open(model_dir / RUN_CONFIG) as f:
        run_config = json.load(f)
    assert metrics["method"] == run_config["method"] == method.config()
    assert run_config["method"]["method"] == method.name
    assert run_config["num_classes"] == metrics["num_classes"] == 8
    assert metrics["epochs_completed"] == EPOCHS
