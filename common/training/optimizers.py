"""The optimisers of a training step: one Adam per optimiser group, TF1's defaults.

Why a module of its own: a method may split its variables among several Adams (DDAH: the
trunk's and the attention branch's, common.methods.base.OptimizerGroup); building them,
naming them in checkpoints, and what each group minimises are the same for every method.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.methods.base import HashingMethod, OptimizerGroup
from common.models.replica_ops import replica_global


def precision_policy(mixed: bool) -> str:
    """The Keras precision policy of a run: float32, or mixed float16 on GPU, bfloat16 on CPU."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def make_optimizer(config, policy: str, variables) -> keras.optimizers.Optimizer:
    """Adam with TF1's defaults (loss-scaled under float16); variables built eagerly.

    Building now (not lazily at the first step) lets a checkpoint restore the moments
    and the iteration count at once instead of deferring them.
    """
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=0.9,
                                      beta_2=0.999, epsilon=config.adam_epsilon)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def optimizer_groups(method: HashingMethod, model) -> list[OptimizerGroup]:
    """``method.optimizer_groups(model)``, checked: names unique, variables disjoint."""
    groups = list(method.optimizer_groups(model))
    if not groups:
        raise ValueError(f"{method.name}.optimizer_groups() lists no optimizer")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"{method.name}: optimizer group names repeat: {names}")
    seen: set[int] = set()
    for group in groups:
        ids = {id(v) for v in group.variables}
        if len(ids) != len(group.variables) or ids & seen:
            raise ValueError(f"{method.name}: optimizer group {group.name!r} shares variables "
                             "with another group (or lists one twice)")
        seen |= ids
    return groups


def optimizer_trackables(groups: list[OptimizerGroup], optimizers: list) -> dict[str, Any]:
    """Checkpoint keys of the optimisers: ``optimizer`` for one (every method's layout
    before several existed), ``optimizer_<group>`` for each of several."""
    if len(optimizers) == 1:
        return {"optimizer": optimizers[0]}
    return {f"optimizer_{g.name}": o for g, o in zip(groups, optimizers)}


def group_objective(group: OptimizerGroup, loss, names: list[str], parts: list,
                     distributed: bool):
    """The scalar ``group`` minimises, from one forward's (replica-scaled) loss parts."""
    if group.objective is None:
        return loss
    by_name = dict(zip(names, parts))
    if callable(group.objective):
        if distributed:  # global-batch values: the objective may be non-linear in them
            by_name = {k: replica_global(v) for k, v in by_name.items()}
        return tf.cast(group.objective(by_name), tf.float32)
    unknown = [k for k in group.objective if k not in by_name]
    if unknown:
        raise ValueError(f"optimizer group {group.name!r} names loss parts {unknown} that "
                         f"loss_terms does not return ({names})")
    return tf.add_n([by_name[k] for k in group.objective])


def with_coupled_decay(group: OptimizerGroup, optimizer, grads: list, replicas: int) -> list:
    """grad + rate * w (PyTorch's coupled Adam weight decay), loss-scaled like the grads;
    each replica adds its 1 / replicas share (the optimiser sums the replicas')."""
    if not group.coupled_weight_decay:
        return grads
    rate = group.coupled_weight_decay / replicas
    return [None if g is None else
            tf.convert_to_tensor(g) + optimizer.scale_loss(rate * tf.cast(v, g.dtype))
            for g, v in zip(grads, group.variables)]
