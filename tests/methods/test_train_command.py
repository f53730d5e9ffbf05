"""Every registered method's ``python -m <package>.train``: a bad flag, shared or the
method's own, stops the command before TensorFlow loads with exit code 2 and exactly one
stderr line, starting with ``error:``, that names the flag (common.cli.runner,
common.cli.settings_flags); nothing is written. And a tiny run (4 synthetic identities,
the method's :data:`tiny_training.TINY_SETTINGS`, 2 epochs of 2 steps) trains to the end
and records the settings its flags gave: one run per method, shared by the module's tests.

The method flags' cases are derived from each method's settings: one case per kind of check
its flags have (a choice, an inclusive or exclusive bound, a memory bound, finiteness,
oddness), on the first setting of that kind; the cases the per-method test files had are
kept as they were (KEPT), with their exact messages. Each case is a new process, as a user
runs it (about half a second each: flags are checked before TensorFlow is imported).
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from method_cli import assert_one_clear_error, run_cli
from tiny_training import tiny_settings

from common.methods import registry
from common.runs.checkpoints import store as checkpoints
from common.runs.run_config import RUN_CONFIG
from common.training.reporting import METRICS

pytestmark = pytest.mark.slow  # trains models or starts processes

METHODS = registry.method_names()

# A shared training flag (common/cli/train_flags.py): every method's command has it.
SHARED = (["--batch_size", "0"], "flag --batch_size=0: 0 is not a positive integer")

# The cases of the per-method files this test replaced (tests/<method>_tf/test_train.py,
# test_bad_flag_stops_with_one_clear_message; DCBH's in tests/dcbh_tf/test_train.py).
KEPT = {
    "dcbh": [(["--width_multiplier", "0"], "--width_multiplier must be > 0"),
             (["--weight_decay", "huge"], "original|l2|none")],
    "ddch": [(["--code_center_weight", "-1"],
              "flag --code_center_weight=-1: -1.0 is not a non-negative"),
             (["--feature_units", "0"], "flag --feature_units=0: 0 is not a positive integer")],
    "ddh": [(["--split_num", "0"], "flag --split_num=0: 0 is not a positive integer")],
    "ddah": [(["--lr_halve_every", "0"], "flag --lr_halve_every=0: 0 is not a positive integer"),
             (["--width_multiplier", "0"], "--width_multiplier must be > 0")],
    "dagh": [(["--attention", "serial"], "flag --attention=serial: value should be one of"),
             (["--margin", "2"], "--margin must be < 2"),
             (["--scale", "0"], "--scale must be > 0")],
    "dfh": [(["--epochs", "10", "--feature_epochs", "10"],
             "--feature_epochs must be below --epochs"),
            (["--hash_loss", "triplet"], "flag --hash_loss=triplet: value should be one of"),
            (["--pair_margin", "0"], "--pair_margin must be in (0, 1]"),
            (["--temperature", "inf"], "--temperature")],
}


def _number(value) -> str:
    return f"{value:g}"


def _derived(name: str) -> list[tuple[list[str], str]]:
    """One bad value per kind of check of the method's flags, with what the line must hold."""
    found = {}
    for field, kind, spec in registry.settings_class(name).specs():
        if not spec.flag:
            continue
        flag = f"--{field.name}"
        step = 1 if kind is int else 0.5
        kinds = []
        if spec.choices is not None:
            kinds.append(("choice", "bogus", f"flag {flag}=bogus: value should be one of"))
        if spec.low is not None:
            kinds.append(("low", _number(spec.low - step), f"flag {flag}="))
        if spec.above is not None and spec.at_most is not None:
            kinds.append(("interval", _number(spec.at_most + step),
                          f"{flag} must be in ({_number(spec.above)}, {_number(spec.at_most)}]"))
        elif spec.above is not None:
            kinds.append(("above", _number(spec.above), f"{flag} must be > {_number(spec.above)}"))
        if spec.below is not None:
            kinds.append(("below", _number(spec.below), f"{flag} must be < {_number(spec.below)}"))
        if spec.high is not None:
            high = spec.high[0]
            shown = str(int(high)) if float(high).is_integer() else repr(high)
            kinds.append(("high", _number(high + step if kind is int else high * 2),
                          f"{flag} must be <= {shown} ({spec.high[1]})"))
        if spec.upper is not None:
            kinds.append(("upper", _number(spec.upper + (2 if spec.odd else step)),
                          f"flag {flag}="))
        if spec.odd:
            low = int(spec.low) if spec.low is not None else 0
            even = low + 1 if low % 2 else low + 2
            kinds.append(("odd", str(even), f"{flag} must be odd"))
        if kind is float and spec.finite and not spec.choices:
            kinds.append(("finite", "nan", f"{flag} must be a finite number"))
        for key, value, message in kinds:
            found.setdefault(key, ([flag, value], message))
    return list(found.values())


def _train_module(name: str) -> str:
    """The method's train command: ``train`` beside its method class's module (README,
    "Adding a method", step 5)."""
    package = registry.settings_class(name).method_class.partition(":")[0].rpartition(".")[0]
    return f"{package}.train"


def _cases():
    params = []
    for name in METHODS:
        cases = [SHARED, *KEPT.get(name, [])]
        kept = {tuple(args[-2:-1]) for args, _ in cases}  # flags already covered
        cases += [c for c in _derived(name) if tuple(c[0][:1]) not in kept]
        params += [pytest.param(name, args, message, id=f"{name}{'-'.join(['', *args])}")
                   for args, message in cases]
    return params


def test_the_derived_cases_cover_every_kind_of_flag_check():
    """Every kind of check a setting can ask for is met by some registered method, so the
    derivation above is exercised (a kind that no method uses would go untested here)."""
    kinds = {message.split(" must be ")[-1].split(" ")[0] for name in METHODS
             for _, message in _derived(name) if " must be " in message}
    assert {">", "<", "<=", "in", "odd", "a"} <= kinds, kinds
    assert all(math.isfinite(float(args[1])) or args[1] == "nan" for name in METHODS
               for args, _ in _derived(name) if args[1] != "bogus")


@pytest.mark.parametrize("name, args, message", _cases())
def test_a_bad_flag_stops_with_one_error_line_naming_it(name, args, message, tmp_path):
    module = _train_module(name)
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{name} has no train command ({module}; README: optional)")
    model_dir = tmp_path / "run"
    result = run_cli(module, [*args, "--model_dir", str(model_dir)], tmp_path, timeout=120)
    line = assert_one_clear_error(result, message, model_dir)
    named = [a for a in args if a.startswith("--")]
    assert any(flag in line for flag in named), line   # the line names the flag
    assert line.endswith("(see --helpshort)"), line


# ---------------------------------------------------------------------- a tiny run
def _flag_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    """One synthetic data folder for every method's run (the first run generates it)."""
    return tmp_path_factory.mktemp("tiny_data") / "synthetic"


@pytest.fixture(scope="module", params=METHODS)
def tiny_run(request, tiny_data_dir, tmp_path_factory):
    """Method ``request.param``'s train command on 4 identities x (4 train + 2 test), 2
    epochs of 2 steps of 8 images, the method's tiny settings as flags."""
    name = request.param
    module = _train_module(name)
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{name} has no train command ({module}; README: optional)")
    work = tmp_path_factory.mktemp(f"tiny_{name}")
    settings = tiny_settings(name)
    flags = [f for k, v in settings.items() for f in (f"--{k}", _flag_value(v))]
    result = run_cli(module, [
        "--dataset", "synthetic", "--data_dir", str(tiny_data_dir),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--batch_size", "8", "--epochs", "2",
        "--eval_every", "0", "--log_every_steps", "0", *flags,
        "--model_dir", str(work / "run")], work, timeout=600)
    return name, settings, work / "run", result


@pytest.mark.slow   # a new process that imports TensorFlow and trains: ~15-30 s per method
def test_a_tiny_run_trains_to_the_end(tiny_run):
    name, _, model_dir, result = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not [line for line in result.stderr.splitlines() if line.startswith("error")]
    index = checkpoints.read_index(str(model_dir))
    assert index["slots"]["last"]["epoch"] == 2
    assert index["slots"]["last"]["optimizer_iterations"] == 4   # 2 epochs x 16/8 steps


@pytest.mark.slow   # shares the run above (the first test of a method pays for it)
def test_a_tiny_run_records_the_settings_its_flags_gave(tiny_run):
    name, settings, model_dir, result = tiny_run
    assert result.returncode == 0, result.stderr[-3000:]
    expected = registry.settings_class(name)(**settings).to_config()
    with open(model_dir / RUN_CONFIG) as f:
        run_config = json.load(f)
    assert run_config["method"] == expected
    assert run_config["dataset"]["synthetic"]["num_identities"] == 4
    with open(model_dir / METRICS) as f:
        metrics = json.load(f)
    assert metrics["method"] == expected
    assert metrics["epochs_completed"] == 2 and metrics["num_classes"] == 4
    assert metrics["dataset"] == "synthetic"
    # only the last state was evaluated (--eval_every 0): it is best_map, figure for figure
    assert metrics["best_map"]["epoch"] == metrics["last"]["epoch"] == 2
    assert metrics["best_map"]["map"] == metrics["last"]["map"]
