"""The table's rows: every registered method, its extra rows, the pixel baselines.

Rows come from the method registry (common.methods.registry): each method's own row, then
its ``table_rows`` (ablations and variants, with the settings that differ), in the
registry's table order; ITQ and LSH close the table. A row may carry its own width:
"ddah@1" is DDAH at width 1 whatever ``--width_multiplier`` says (rows at published or
matched sizes beside the others). TensorFlow-free: only settings classes are imported.
"""

from __future__ import annotations

from typing import Any

from common.methods import registry
from common.methods.settings import WIDTH

BASELINES = ("itq", "lsh")
BASELINE_NAMES = {"itq": "ITQ", "lsh": "LSH"}
WIDTH_MARK = "@"


def _deep_rows() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """row -> (method, display name, row settings), in table order."""
    rows: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for name in registry.method_names():
        settings = registry.settings_class(name)
        rows[name] = (name, settings.display_name, {})
        for row, (shown, overrides) in settings.table_rows.items():
            rows[row] = (name, shown, dict(overrides))
    return rows


def all_methods() -> tuple[str, ...]:
    """Every row name of the table (without widths), in table order."""
    return (*_deep_rows(), *BASELINES)


def parse_row(row: str) -> tuple[str, float | None]:
    """(row name, its own width or None) of a row such as "ddah" or "ddah@1".

    Raises:
        ValueError: unknown row, a width that is not a number > 0 and at most
            ``--width_multiplier``'s bound, or a width for a method without a width
            multiplier.
    """
    name, mark, width = row.partition(WIDTH_MARK)
    if name not in all_methods():
        raise ValueError(f"unknown method {name!r} in row {row!r}; choose from "
                         f"{', '.join(all_methods())}")
    if not mark:
        return name, None
    try:
        value = float(width)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"row {row!r}: the width after {WIDTH_MARK!r} must be a number > 0")
    if value > WIDTH[0]:  # the bound of --width_multiplier and of every method's setting
        raise ValueError(f"row {row!r}: the width after {WIDTH_MARK!r} must be <= {WIDTH[0]:g} "
                         f"({WIDTH[1]})")
    if not has_width(name):
        raise ValueError(f"row {row!r}: {name} has no width multiplier (its network has one "
                         "published size)")
    return name, value


def canonical_row(row: str) -> str:
    """The one spelling of a row: ``name@{width:g}`` ("ddah@1.0", "ddah@01" -> "ddah@1"),
    the exact shortest spelling where ``:g`` would round the width; the name alone without
    a width. A cell's folder is named by it, so equivalent spellings share one cell.
    (A row whose width equals ``--width_multiplier`` stays its own row: see
    :func:`check_methods`.)"""
    name, width = parse_row(row)
    if width is None:
        return name
    shown = f"{width:g}"
    return f"{name}{WIDTH_MARK}{shown if float(shown) == width else repr(width)}"


def is_deep(row: str) -> bool:
    return row.partition(WIDTH_MARK)[0] in _deep_rows()


def has_width(row: str) -> bool:
    """Whether the row's method has a width multiplier (all deep ones but DDH)."""
    rows = _deep_rows()
    name = row.partition(WIDTH_MARK)[0]
    if name not in rows:
        return False
    fields = {f.name for f, _, _ in registry.settings_class(rows[name][0]).specs()}
    return "width_multiplier" in fields


def row_width(row: str, default: float) -> float | None:
    """The width a row trains at (None for a method without a width multiplier)."""
    name, width = parse_row(row)
    if not has_width(name):
        return None
    return width if width is not None else default


def display_name(row: str) -> str:
    name, width = parse_row(row)
    rows = _deep_rows()
    shown = rows[name][1] if name in rows else BASELINE_NAMES[name]
    return f"{shown}, width x{width:g}" if width is not None else shown


def method_of(row: str) -> str:
    """The registered method a deep row trains."""
    return _deep_rows()[row.partition(WIDTH_MARK)[0]][0]


def _deep_settings(row: str, num_bits: int, width_multiplier: float) -> dict[str, Any]:
    """The settings a deep row's method is made with (the others at their defaults)."""
    name, _ = parse_row(row)
    _, _, overrides = _deep_rows()[name]
    settings = {"num_bits": num_bits, **overrides}
    width = row_width(row, width_multiplier)
    if width is not None:
        settings["width_multiplier"] = width
    return settings


def make_deep_method(row: str, num_bits: int, width_multiplier: float = 1.0):
    """The method of a row at ``num_bits`` with its published defaults, the row's own
    settings, and its width (the row's own, else ``width_multiplier``) where it has one."""
    return registry.make_method(method_of(row), **_deep_settings(row, num_bits,
                                                                 width_multiplier))


def method_config(row: str, num_bits: int, width_multiplier: float | None,
                  seed: int = 0) -> dict[str, Any]:
    """The config the row's cell records as ``method_config``, without TensorFlow: a deep
    row's :func:`make_deep_method` ``.config()``; a baseline's method, bits and seed.

    Raises:
        ValueError: the method refuses these settings.
    """
    if not is_deep(row):
        return {"method": parse_row(row)[0], "num_bits": num_bits, "seed": seed}
    settings = _deep_settings(row, num_bits, 1.0 if width_multiplier is None
                              else width_multiplier)
    return registry.settings_class(method_of(row))(**settings).to_config()


def complete_method_config(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded ``method_config`` with the settings it predates at the value its run had
    (the method's ``complete_config``: MethodSettings.added_later); a baseline's as is."""
    name = config.get("method")
    if name not in registry.method_names():
        return dict(config)
    return registry.settings_class(name).complete(config)


def make_baseline(name: str, num_bits: int, seed: int):
    from common.methods.baselines import BASELINES as CLASSES
    return CLASSES[name](num_bits, seed=seed)


def check_methods(names, width_multiplier: float | None = None) -> list[str]:
    """The requested rows in table order (methods in :func:`all_methods` order, each
    method's rows in the order given), each in its :func:`canonical_row` spelling.

    A row given twice counts once; two spellings of one row ("ddah@1", "ddah@1.0") are
    refused, and so (given ``width_multiplier``, the table's) is a row at the table's own
    width beside the plain row ("ddah@0.25" and "ddah" at ``--width_multiplier 0.25``):
    either would train the same cell twice. The two stay distinct rows where only one is
    given: each names the folder of its finished cells.

    Raises:
        ValueError: no row, an unknown or malformed one, or two rows of one cell.
    """
    if not names:
        raise ValueError("no method given")
    spelled: dict[str, str] = {}
    for row in dict.fromkeys(names):
        canonical = canonical_row(row)
        if canonical in spelled:
            raise ValueError(f"rows {spelled[canonical]!r} and {row!r} are one row "
                             f"({canonical!r}): give it once")
        spelled[canonical] = row
    if width_multiplier is not None:
        for row in spelled:
            name, width = parse_row(row)
            if width is not None and width == width_multiplier and name in spelled:
                raise ValueError(f"rows {name!r} and {row!r} are one cell at "
                                 f"--width_multiplier {width_multiplier:g}: give one of them")
    parsed = [(row, parse_row(row)[0]) for row in spelled]
    return [row for name in all_methods() for row, method in parsed if method == name]
