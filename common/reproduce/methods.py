"""Which methods the harness knows, and how to make each for a bit length."""

from __future__ import annotations

import importlib

# name -> (module, class) of the deep methods; each is a common.method.HashingMethod.
DEEP_METHODS = {
    "dcbh": ("dcbh_tf.method", "DCBH"),
    "ddch": ("ddch_tf.method", "DDCH"),
    "ddh": ("ddh_tf.method", "DDH"),
    "ddah": ("ddah_tf.method", "DDAH"),  # not in the default --methods: ask for it by name
    "dagh": ("dagh_tf.method", "DAGH"),  # nor this one
    # DAGH's ablation rows: DAGH with one part removed (dagh_tf/README.md). Their runs are
    # DAGH runs (method "dagh" in the run config) with the setting below.
    "dagh_no_cascade": ("dagh_tf.method", "DAGH"),
    "dagh_no_discrete": ("dagh_tf.method", "DAGH"),
    "dagh_no_identity": ("dagh_tf.method", "DAGH"),
    "dagh_no_parts": ("dagh_tf.method", "DAGH"),  # all three removed: DDAH's pass a, alone
    "dagh_two_pass": ("dagh_tf.method", "DAGH"),  # DAGH trained in DDAH's two passes
    # DDAH with the port's former batch-norm statistics (both passes blended), for comparison
    "ddah_blended": ("ddah_tf.method", "DDAH"),
    "dfh": ("dfh_tf.method", "DFH"),  # not in the default --methods either
    # DFH's ablation rows (dfh_tf/README.md): one part replaced. Training on GAN-augmented
    # faces is not a row: it is the same rows with --train_dir pointing at the augmented split.
    "dfh_ce": ("dfh_tf.method", "DFH"),
    "dfh_first_order": ("dfh_tf.method", "DFH"),
    "dfh_no_distillation": ("dfh_tf.method", "DFH"),
    "dfh_one_stage": ("dfh_tf.method", "DFH"),
}
# Settings a table row passes to its method on top of the bit length (and width).
ROW_SETTINGS = {
    "dagh_no_cascade": {"attention": "parallel"},
    "dagh_no_discrete": {"hash_layer": "tanh"},
    "dagh_no_identity": {"identity_head": "softmax"},
    "dagh_no_parts": {"attention": "parallel", "hash_layer": "tanh", "identity_head": "softmax"},
    "dagh_two_pass": {"passes": 2},
    "ddah_blended": {"batch_norm_statistics": "both_passes"},
    "dfh_ce": {"hash_loss": "cross_entropy"},
    "dfh_first_order": {"quantization": "first_order"},
    "dfh_no_distillation": {"distillation_weight": 0.0},
    "dfh_one_stage": {"feature_epochs": 0},
}
FIXED_SIZE_MODULES = ("ddh_tf.method",)  # methods without a width multiplier
BASELINES = ("itq", "lsh")
ALL_METHODS = (*DEEP_METHODS, *BASELINES)
# Table row order: the paper's method first, then the newer one, the older one, baselines.
DISPLAY_NAMES = {"dcbh": "DCBH", "ddch": "DDCH", "ddh": "DDH", "ddah": "DDAH", "dagh": "DAGH",
                 "dagh_no_cascade": "DAGH without the attention cascade",
                 "dagh_no_discrete": "DAGH without the discrete hash layer",
                 "dagh_no_identity": "DAGH without the discrete identity loss",
                 "dagh_no_parts": "DAGH without all three (DDAH's network, one pass)",
                 "dagh_two_pass": "DAGH trained in DDAH's two passes",
                 "ddah_blended": "DDAH, batch-norm statistics of both passes blended",
                 "dfh": "DFH", "dfh_ce": "DFH with cross-entropy instead of the metric loss",
                 "dfh_first_order": "DFH with first-order quantization",
                 "dfh_no_distillation": "DFH without distillation",
                 "dfh_one_stage": "DFH in one stage (codes trained from the start)",
                 "itq": "ITQ", "lsh": "LSH"}


# A table row is a method name, optionally at its own width: "ddah@1" is DDAH at width 1
# whatever --width_multiplier says (rows at published or matched sizes beside the others).
WIDTH_MARK = "@"


def parse_row(row: str) -> tuple[str, float | None]:
    """(method name, its own width or None) of a row such as "ddah" or "ddah@1".

    Raises:
        ValueError: unknown method, a width that is not a number > 0, or a width for a
            method without a width multiplier.
    """
    name, mark, width = row.partition(WIDTH_MARK)
    if name not in ALL_METHODS:
        raise ValueError(f"unknown method {name!r} in row {row!r}; choose from "
                         f"{', '.join(ALL_METHODS)}")
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


def row_width(row: str, default: float) -> float | None:
    """The width a row trains at (None for a method without a width multiplier)."""
    name, width = parse_row(row)
    if not has_width(name):
        return None
    return width if width is not None else default


def is_deep(name: str) -> bool:
    return name.partition(WIDTH_MARK)[0] in DEEP_METHODS


def has_width(name: str) -> bool:
    """Whether the method (a deep one) has a width multiplier (all but DDH, whose network
    has one published size)."""
    return name in DEEP_METHODS and DEEP_METHODS[name][0] not in FIXED_SIZE_MODULES


def display_name(row: str) -> str:
    name, width = parse_row(row)
    shown = DISPLAY_NAMES.get(name, name)
    return f"{shown}, width x{width:g}" if width is not None else shown


def deep_method_class(name: str):
    module, cls = DEEP_METHODS[name.partition(WIDTH_MARK)[0]]
    return getattr(importlib.import_module(module), cls)


def make_deep_method(name: str, num_bits: int, width_multiplier: float = 1.0):
    """The method of a row at ``num_bits`` with its published defaults (and the backbone
    width, for the methods that have one: the row's own, else ``width_multiplier``),
    plus the row's own settings (``ROW_SETTINGS``)."""
    method, _ = parse_row(name)
    cls = deep_method_class(method)
    kwargs = {"num_bits": num_bits, **ROW_SETTINGS.get(method, {})}
    width = row_width(name, width_multiplier)
    if width is not None:
        kwargs["width_multiplier"] = width
    return cls(**kwargs)


def make_baseline(name: str, num_bits: int, seed: int):
    from common.baselines import BASELINES as CLASSES
    return CLASSES[name](num_bits, seed=seed)


def check_methods(names) -> list[str]:
    """The requested rows in table order (methods in ``ALL_METHODS`` order, each method's
    rows in the order given); ValueError naming an unknown one."""
    if not names:
        raise ValueError("no method given")
    parsed = [(row, parse_row(row)[0]) for row in dict.fromkeys(names)]
    return [row for name in ALL_METHODS for row, method in parsed if method == name]
