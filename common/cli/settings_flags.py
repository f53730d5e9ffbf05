"""A method's command-line flags, made from its settings (common.methods.settings).

Why: the flags are what a user types; the settings are what the method is. Generating the
first from the second keeps one definition of each setting: its name, default, help and
bounds give the absl flag (an enum for choices, ``lower_bound`` for an inclusive lower
bound), its parse-time checks (exit 2 with one ``error:`` line before TensorFlow loads:
"--width_multiplier must be > 0", the memory bounds of common.cli.checks, NaN refused) and,
once parsed, the settings object the method is built from.
"""

from __future__ import annotations

import math
from typing import Any

from absl import flags

from common.cli import checks
from common.methods.settings import MethodSettings, Setting


def _number(value: float) -> str:
    return f"{value:g}"


def define_flags(settings: type[MethodSettings],
                 flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, flags.FlagHolder]:
    """Define one flag per setting of ``settings`` that has one; returns them by name."""
    holders = {}
    for field, kind, spec in settings.specs():
        if spec.flag:
            holders[field.name] = _define(field.name, field.default, kind, spec, flag_values)
    for names, predicate, message in settings.flag_checks:
        flags.register_multi_flags_validator(list(names), predicate, message=message,
                                           flag_values=flag_values)
    return holders


def _define(name: str, default: Any, kind: type, spec: Setting,
            flag_values: flags.FlagValues) -> flags.FlagHolder:
    bounds: dict[str, Any] = {}
    if spec.low is not None:
        bounds["lower_bound"] = spec.low
    if spec.upper is not None:
        bounds["upper_bound"] = spec.upper
    if spec.choices is not None:
        shown = [str(c) for c in spec.choices]
        holder = flags.DEFINE_enum(name, str(default), shown, spec.help, flag_values=flag_values)
    elif kind is bool:
        holder = flags.DEFINE_bool(name, default, spec.help, flag_values=flag_values)
    elif kind is int:
        holder = flags.DEFINE_integer(name, default, spec.help, flag_values=flag_values, **bounds)
    elif kind is float:
        holder = flags.DEFINE_float(name, default, spec.help, flag_values=flag_values, **bounds)
    else:
        holder = flags.DEFINE_string(name, default, spec.help, flag_values=flag_values)
    _validators(name, spec, flag_values)
    return holder


def _validators(name: str, spec: Setting, flag_values: flags.FlagValues) -> None:
    """The parse-time checks a setting's bounds ask for, with the project's messages."""
    def add(check, message: str) -> None:
        flags.register_validator(name, check, message=f"--{name} {message}",
                                 flag_values=flag_values)

    unset = (lambda v: v is None) if spec.optional else (lambda v: False)
    if spec.above is not None and spec.at_most is not None:
        low, high = spec.above, spec.at_most
        add(lambda v: unset(v) or low < v <= high,
            f"must be in ({_number(low)}, {_number(high)}]")
    elif spec.above is not None:
        low = spec.above
        add(lambda v: unset(v) or v > low, f"must be > {_number(low)}")
    if spec.odd:
        add(lambda v: v % 2 == 1, "must be odd (centred 'same' padding)")
    if spec.below is not None:
        below = spec.below
        add(lambda v: v < below, f"must be < {_number(below)}")
    if spec.high is not None:
        checks.bound_flag(name, spec.high[0], spec.high[1])
    if spec.finite:
        add(lambda v: v is None or math.isfinite(v), "must be a finite number")


def settings_from_flags(settings: type[MethodSettings],
                        holders: dict[str, flags.FlagHolder]) -> MethodSettings:
    """The settings the parsed flags give (settings without a flag keep their default)."""
    values = {}
    for field, kind, spec in settings.specs():
        if field.name in holders:
            value = holders[field.name].value
            values[field.name] = kind(value) if spec.choices is not None else value
    return settings(**values)
