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
        ValueError: unknown row, a width that is not a number > 0, or a width for a
            method without a width multiplier.
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
    if not has_width(name):
        raise ValueError(f"row {row!r}: {name} has no width multiplier (its network has one "
                         "published size)")
    return name, value


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


def make_deep_method(row: str, num_bits: int, width_multiplier: float = 1.0):
    """The method of a row at ``num_bits`` with its published defaults, the row's own
    settings, and its width (the row's own, else ``width_multiplier``) where it has one."""
    name, _ = parse_row(row)
    method, _, overrides = _deep_rows()[name]
    settings = {"num_bits": num_bits, **overrides}
    width = row_width(row, width_multiplier)
    if width is not None:
        settings["width_multiplier"] = width
    return registry.make_method(method, **settings)


def make_baseline(name: str, num_bits: int, seed: int):
    from common.methods.baselines import BASELINES as CLASSES
    return CLASSES[name](num_bits, seed=seed)


def check_methods(names) -> list[str]:
    """The requested rows in table order (methods in :func:`all_methods` order, each
    method's rows in the order given); ValueError naming an unknown one."""
    if not names:
        raise ValueError("no method given")
    parsed = [(row, parse_row(row)[0]) for row in dict.fromkeys(names)]
    return [row for name in all_methods() for row, method in parsed if method == name]
