"""Which methods the harness knows, and how to make each for a bit length."""

from __future__ import annotations

import importlib
import inspect

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
    "dfh_ce": {"hash_loss": "cross_entropy"},
    "dfh_first_order": {"quantization": "first_order"},
    "dfh_no_distillation": {"distillation_weight": 0.0},
    "dfh_one_stage": {"feature_epochs": 0},
}
BASELINES = ("itq", "lsh")
ALL_METHODS = (*DEEP_METHODS, *BASELINES)
# Table row order: the paper's method first, then the newer one, the older one, baselines.
DISPLAY_NAMES = {"dcbh": "DCBH", "ddch": "DDCH", "ddh": "DDH", "ddah": "DDAH", "dagh": "DAGH",
                 "dagh_no_cascade": "DAGH without the attention cascade",
                 "dagh_no_discrete": "DAGH without the discrete hash layer",
                 "dagh_no_identity": "DAGH without the discrete identity loss",
                 "dagh_no_parts": "DAGH without all three (DDAH's network, one pass)",
                 "dfh": "DFH", "dfh_ce": "DFH with cross-entropy instead of the metric loss",
                 "dfh_first_order": "DFH with first-order quantization",
                 "dfh_no_distillation": "DFH without distillation",
                 "dfh_one_stage": "DFH in one stage (codes trained from the start)",
                 "itq": "ITQ", "lsh": "LSH"}


def is_deep(name: str) -> bool:
    return name in DEEP_METHODS


def deep_method_class(name: str):
    module, cls = DEEP_METHODS[name]
    return getattr(importlib.import_module(module), cls)


def make_deep_method(name: str, num_bits: int, width_multiplier: float = 1.0):
    """The method at ``num_bits`` with its published defaults (and the backbone width,
    for the methods that have one), plus the row's own settings (``ROW_SETTINGS``)."""
    cls = deep_method_class(name)
    kwargs = {"num_bits": num_bits, **ROW_SETTINGS.get(name, {})}
    if "width_multiplier" in inspect.signature(cls.__init__).parameters:
        kwargs["width_multiplier"] = width_multiplier
    return cls(**kwargs)


def make_baseline(name: str, num_bits: int, seed: int):
    from common.baselines import BASELINES as CLASSES
    return CLASSES[name](num_bits, seed=seed)


def check_methods(names) -> list[str]:
    """The requested methods in table order; ValueError naming an unknown one."""
    unknown = [n for n in names if n not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(ALL_METHODS)}")
    if not names:
        raise ValueError("no method given")
    return [n for n in ALL_METHODS if n in names]
