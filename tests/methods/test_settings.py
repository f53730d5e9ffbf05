"""Every registered method's settings (common.methods.settings, common.methods.registry):
registered under their own name, recorded and rebuilt without loss, and every bound refused
with the message that names the setting.

Parametrised over ``registry.method_names()``: a new method is checked as soon as it is
registered. The refused values are derived here from each setting's declared bounds (one
value just past each bound, the wrong type, None, NaN), and the expected messages are the
documented ones ("num_bits must be >= 1, got 0"), written out independently of
``settings.problem``.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from common.methods import registry
from common.methods.base import CODES, LOGITS
from common.methods.settings import MethodSettings

METHODS = registry.method_names()


def _specs(name):
    return registry.settings_class(name).specs()


def _cases(kind_of_case):
    """(method, setting) pairs of every registered method, as pytest params."""
    return [pytest.param(m, f.name, id=f"{m}-{f.name}") for m in METHODS
            for f, kind, spec in _specs(m) if kind_of_case(kind, spec)]


def _within(kind, spec, value) -> bool:
    """Whether ``value`` satisfies the bounds ``spec`` declares (written out here)."""
    checks = [
        spec.low is None or value >= spec.low,
        spec.above is None or value > spec.above,
        spec.below is None or value < spec.below,
        spec.at_most is None or value <= spec.at_most,
        spec.upper is None or value <= spec.upper,
        spec.high is None or value <= spec.high[0],
        not spec.odd or value % 2 == 1,
        kind is not float or math.isfinite(value),
    ]
    return all(checks)


def _other_value(kind, spec, default):
    """A valid value of the setting that differs from its default."""
    if spec.choices is not None:
        return next(c for c in spec.choices if c != default)
    if kind is bool:
        return not default
    if kind is str:
        return default + "_other"
    base = default if default is not None else (1 if kind is int else 0.5)
    candidates = ([base + 1, base + 2, base - 1, base - 2] if kind is int else
                  [base * 0.5, base + 0.25, base * 2, 0.5, 0.125])
    for value in candidates:
        if value != default and _within(kind, spec, value):
            return value
    raise AssertionError(f"no valid value other than {default!r} found for {spec}")


# ---------------------------------------------------------------------- the registry
def test_every_method_is_registered_under_its_own_name_in_table_order():
    assert METHODS and len(set(METHODS)) == len(METHODS)
    classes = [registry.settings_class(m) for m in METHODS]
    assert [c.name for c in classes] == list(METHODS)
    assert all(issubclass(c, MethodSettings) and dataclasses.is_dataclass(c) for c in classes)
    orders = [(c.table_order, c.name) for c in classes]
    assert orders == sorted(orders)
    with pytest.raises(registry.UnknownMethodError, match="unknown method 'nope'; registered: "
                       + ", ".join(METHODS)):
        registry.settings_class("nope")


@pytest.mark.parametrize("name", METHODS)
def test_the_method_class_is_the_one_its_settings_name(name):
    method_class = registry.method_class(name)
    assert method_class.Settings is registry.settings_class(name)
    assert method_class.name == name
    assert LOGITS in method_class.output_names and CODES in method_class.output_names
    method = registry.make_method(name)
    assert isinstance(method, method_class)
    assert method.settings == registry.settings_class(name)()


# ---------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", METHODS)
def test_defaults_are_recorded_and_rebuilt_without_loss(name):
    settings_class = registry.settings_class(name)
    defaults = settings_class()
    config = defaults.to_config()
    fields = [f.name for f in dataclasses.fields(settings_class)]
    assert list(config) == ["method", *fields] and config["method"] == name
    recorded = json.loads(json.dumps(config))          # as run_config.json holds it
    assert recorded == config
    assert settings_class(**{k: v for k, v in recorded.items() if k != "method"}) == defaults
    method_class = registry.method_class(name)
    method = method_class.from_config(recorded)
    assert method.config() == config and method.settings == defaults
    for field in fields:
        assert getattr(method, field) == getattr(defaults, field)
    other = next(m for m in METHODS if m != name) if len(METHODS) > 1 else "another"
    with pytest.raises(ValueError, match=f"config is for method '{other}', not '{name}'"):
        method_class.from_config({**config, "method": other})


@pytest.mark.parametrize("name, setting", _cases(lambda kind, spec: True))
def test_a_changed_setting_is_recorded_and_rebuilt(name, setting):
    settings_class = registry.settings_class(name)
    field, kind, spec = next(s for s in _specs(name) if s[0].name == setting)
    value = _other_value(kind, spec, field.default)
    settings = settings_class(**{setting: value})
    config = json.loads(json.dumps(settings.to_config()))
    assert config[setting] == value
    # The others keep their defaults, but for those a method derives from the rest (a None
    # default: DAGH's scale follows num_bits).
    derived = {f.name for f in dataclasses.fields(settings_class) if f.default is None}
    expected = {**settings_class().to_config(), setting: value}
    assert {k: v for k, v in config.items() if k not in derived - {setting}} == {
        k: v for k, v in expected.items() if k not in derived - {setting}}
    assert all(config[k] is not None for k in derived)
    rebuilt = registry.method_class(name).from_config(config)
    assert rebuilt.settings == settings and getattr(rebuilt, setting) == value


# ---------------------------------------------------------------------- refusals
def _bad_values(name, kind, spec):
    """(value, exact message) for each way the setting can be wrong."""
    g = lambda bound: f"{bound:g}"  # noqa: E731 - how the messages show a bound
    cases = []
    if not spec.optional:
        cases.append((None, f"{name} must be set, got None"))
    if spec.choices is not None:
        bogus = "bogus" if all(isinstance(c, str) for c in spec.choices) else 99
        return cases + [(bogus, f"{name} must be one of {spec.choices}, got {bogus!r}")]
    if kind is bool:
        return cases + [("yes", f"{name} must be a bool, got 'yes'")]
    if kind is str:
        return cases + [(3, f"{name} must be a string, got 3")]
    if kind is int:
        cases += [(1.5, f"{name} must be an integer, got 1.5"),
                  (True, f"{name} must be an integer, got True")]
    else:
        cases.append(("1", f"{name} must be a number, got '1'"))
        if spec.finite or spec.above is not None or spec.low is not None:
            cases += [(math.nan, f"{name} must be a finite number, got nan"),
                      (math.inf, f"{name} must be a finite number, got inf")]
    step = 1 if kind is int else 0.5
    if spec.low is not None:
        value = spec.low - step
        cases.append((value, f"{name} must be >= {g(spec.low)}, got {value}"))
    if spec.above is not None and spec.at_most is not None:
        for value in (spec.above, spec.at_most + step):
            cases.append((value, f"{name} must be in ({g(spec.above)}, {g(spec.at_most)}], "
                                 f"got {value}"))
    elif spec.above is not None:
        cases.append((spec.above, f"{name} must be > {g(spec.above)}, got {spec.above}"))
    elif spec.at_most is not None:
        value = spec.at_most + step
        cases.append((value, f"{name} must be <= {g(spec.at_most)}, got {value}"))
    if spec.below is not None:
        shown = (f"in [{g(spec.low)}, {g(spec.below)})" if spec.low is not None
                 else f"< {g(spec.below)}")
        cases.append((spec.below, f"{name} must be {shown}, got {spec.below}"))
    if spec.upper is not None:
        value = spec.upper + (2 if spec.odd else step)
        cases.append((value, f"{name} must be <= {g(spec.upper)}, got {value}"))
    if spec.high is not None:
        value = spec.high[0] + step if kind is int else spec.high[0] * 2
        cases.append((value, f"{name} must be <= {g(spec.high[0])} ({spec.high[1]}), "
                             f"got {value}"))
    if spec.odd:
        even = next(v for v in range(2, 64, 2) if _within(kind, dataclasses.replace(
            spec, odd=False), v))
        cases.append((even, f"{name} must be an odd integer >= 1 (centred 'same' padding), "
                            f"got {even}"))
    return cases


@pytest.mark.parametrize("name, setting", _cases(lambda kind, spec: True))
def test_every_bound_of_a_setting_is_refused_naming_it(name, setting):
    settings_class = registry.settings_class(name)
    field, kind, spec = next(s for s in _specs(name) if s[0].name == setting)
    cases = _bad_values(setting, kind, spec)
    assert cases or spec.optional and kind is bool, f"{setting}: nothing to refuse"
    for value, message in cases:
        with pytest.raises(ValueError) as refused:
            settings_class(**{setting: value})
        assert str(refused.value) == message, (value, str(refused.value))
        with pytest.raises(ValueError) as refused_too:  # the method checks through them
            registry.make_method(name, **{setting: value})
        assert str(refused_too.value) == message
