"""A method's settings, each written once: name, default, help, bounds, checks.

Why: a setting used to be written five times (the flag, the flag-to-method glue, the
method's ``__init__``, its checks and its ``config()``). Now a method's package declares a
frozen dataclass of :class:`MethodSettings`; each field's :func:`setting` carries its help
text and bounds, from which come the constructor's checks (here), the command line's flags
(common.cli.settings_flags) and the run's recorded config (``dataclasses.asdict``).
TensorFlow-free: the command line checks its flags before TensorFlow loads.

Example::

    @dataclasses.dataclass(frozen=True)
    class DCBHSettings(MethodSettings):
        name: ClassVar[str] = "dcbh"
        method_class: ClassVar[str] = "dcbh_tf.method:DCBH"
        num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

# (value, why) upper bounds of the settings that size memory (the command line refuses
# larger values while flags are parsed, saying why).
BITS = (1024, "the methods are meant for 12 to 48 bits; wider codes need layers that exhaust "
              "memory")
UNITS_PER_BIT = (64, "a wider layer exhausts memory")
HIDDEN_UNITS = (8192, "a wider layer exhausts memory")
WIDTH = (8.0, "the original is 1.0; a wider backbone exhausts memory")
EPOCHS = (10**6, "longer than any run")
SEED = (2**32 - 1, "numpy's seed range")


@dataclass(frozen=True)
class Setting:
    """What a setting is allowed to be, for its check and for its flag.

    Attributes:
        help: the flag's help text.
        low: inclusive lower bound (the flag's ``lower_bound``).
        above: exclusive lower bound (the flag says "--NAME must be > ABOVE").
        below: exclusive upper bound ("--NAME must be < BELOW").
        at_most: inclusive upper bound checked with the others ("... in (above, at_most]").
        high: (value, why): inclusive upper bound of a setting that sizes memory or work.
        upper: inclusive upper bound the flag states itself (absl's ``upper_bound``).
        choices: the allowed values (an enum flag).
        finite: a float that must be finite (NaN and inf refused).
        odd: an integer that must be odd.
        optional: None is allowed (it means "derive it", see the method).
        flag: whether the command line has a flag for it (an integer with ``choices`` gets
            an enum flag of their strings).
    """

    help: str
    low: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    high: tuple[float, str] | None = None
    upper: float | None = None
    choices: tuple | None = None
    finite: bool = False
    odd: bool = False
    optional: bool = False
    flag: bool = True


def setting(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field of a :class:`MethodSettings` (``bounds``: see :class:`Setting`)."""
    return dataclasses.field(default=default, metadata={"setting": Setting(help, **bounds)})


def is_integer(value: Any) -> bool:
    """An integer setting: int or numpy integer, not bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A real-number setting: int, float or numpy number, not bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _g(bound: float) -> str:
    """A bound as the messages show it: 0 (not 0.0), 1e-05."""
    return f"{bound:g}"


def problem(name: str, kind: type, spec: Setting, value: Any) -> str | None:
    """Why ``value`` is not a valid setting ``name``, or None (the messages the methods have
    always given: "NAME must be >= 1, got 0")."""
    if value is None:
        return None if spec.optional else f"{name} must be set, got None"
    if spec.choices is not None:
        if value not in spec.choices or (kind is not bool and isinstance(value, bool)):
            return f"{name} must be one of {spec.choices}, got {value!r}"
        return None
    if kind is bool:
        return None if isinstance(value, (bool, np.bool_)) else \
            f"{name} must be a bool, got {value!r}"
    if kind is str:
        return None if isinstance(value, str) else f"{name} must be a string, got {value!r}"
    numeric = is_integer(value) if kind is int else is_real(value)
    if not numeric:
        return f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
    if kind is float and (spec.finite or spec.above is not None or spec.low is not None) \
            and not math.isfinite(value):
        return f"{name} must be a finite number, got {value}"
    if spec.low is not None and not value >= spec.low:
        return f"{name} must be >= {_g(spec.low)}, got {value}"
    if spec.above is not None and spec.at_most is not None and \
            not spec.above < value <= spec.at_most:
        return f"{name} must be in ({_g(spec.above)}, {_g(spec.at_most)}], got {value}"
    if spec.above is not None and not value > spec.above:
        return f"{name} must be > {_g(spec.above)}, got {value}"
    if spec.below is not None and not value < spec.below:
        if spec.low is not None:
            return f"{name} must be in [{_g(spec.low)}, {_g(spec.below)}), got {value}"
        return f"{name} must be < {_g(spec.below)}, got {value}"
    if spec.at_most is not None and not value <= spec.at_most:
        return f"{name} must be <= {_g(spec.at_most)}, got {value}"
    if spec.upper is not None and not value <= spec.upper:
        return f"{name} must be <= {_g(spec.upper)}, got {value}"
    if spec.high is not None and not value <= spec.high[0]:
        return f"{name} must be <= {_g(spec.high[0])} ({spec.high[1]}), got {value}"
    if spec.odd and value % 2 != 1:
        return f"{name} must be an odd integer >= 1 (centred 'same' padding), got {value}"
    return None


@dataclass(frozen=True)
class MethodSettings:
    """Base of every method's settings (a frozen dataclass of :func:`setting` fields).

    Class attributes a method's settings set:
        name: the method's registry name ("dcbh"), recorded in every run's config.
        display_name: how tables name it ("DCBH").
        table_order: its row's place in the harness's tables (the paper's method first).
        method_class: "module:Class" of its :class:`common.methods.base.HashingMethod`
            (imported on use: it pulls in TensorFlow).
        added_later: settings added after runs of the method were made, with the value
            those runs had (a recorded config without the key was made with it).
        table_rows: the harness's extra rows of this method (ablations, variants):
            row name -> (display name, settings that differ from the defaults).
        flag_checks: checks of the command line that involve other flags (the training
            flags too): (flag names, predicate of their values, message).
    """

    name: ClassVar[str] = "method"
    display_name: ClassVar[str] = "method"
    table_order: ClassVar[int] = 100
    method_class: ClassVar[str] = ""
    added_later: ClassVar[dict[str, Any]] = {}
    table_rows: ClassVar[dict[str, tuple[str, dict[str, Any]]]] = {}
    flag_checks: ClassVar[tuple[tuple[tuple[str, ...], Callable[[dict], bool], str], ...]] = ()

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            spec = field.metadata.get("setting")
            if spec is None:
                continue
            value = getattr(self, field.name)
            why = problem(field.name, _kind(field), spec, value)
            if why:
                raise ValueError(why)
            if isinstance(value, np.generic):  # a numpy number: record a plain one
                object.__setattr__(self, field.name, value.item())
        self.check()

    def check(self) -> None:
        """Checks that involve several settings (raise ValueError); none by default."""

    def derive(self, **values: Any) -> None:
        """Set derived values (a None that means "work it out") from :meth:`__post_init__`."""
        for key, value in values.items():
            object.__setattr__(self, key, value)

    @classmethod
    def specs(cls) -> list[tuple[dataclasses.Field, type, Setting]]:
        """(field, its type, its Setting) of every setting, in declaration order."""
        return [(f, _kind(f), f.metadata["setting"]) for f in dataclasses.fields(cls)
                if "setting" in f.metadata]

    @classmethod
    def complete(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A recorded config with the settings it predates at the value its run had."""
        return {**cls.added_later, **config}

    def to_config(self) -> dict[str, Any]:
        """What runs record: ``{"method": name, setting: value, ...}``."""
        return {"method": self.name, **dataclasses.asdict(self)}


_KINDS = {"int": int, "float": float, "str": str, "bool": bool}


def _kind(field: dataclasses.Field) -> type:
    """int, float, str or bool, from the field's annotation ("float | None" -> float)."""
    annotation = field.type if isinstance(field.type, str) else field.type.__name__
    base = annotation.split("|")[0].strip()
    if base not in _KINDS:
        raise TypeError(f"setting {field.name}: unsupported type {annotation!r}")
    return _KINDS[base]


def check_all(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)

