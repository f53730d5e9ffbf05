"""What the shared training loop needs from a hashing method.

A method is a model builder plus its loss: the loop, checkpoints, evaluation and
export are shared. Subclasses fill in :meth:`build_model` and :meth:`loss_terms`
and, when they keep state outside the optimizer (DCBH's centers),
:meth:`before_optimizer_step`. A method trained by several optimisers (DDAH: one for
the trunk, one for the attention branch) lists them in :meth:`optimizer_groups`; one
whose learning rate changes with the epoch says so in :meth:`learning_rate`; one
whose model computes more than inference needs (DDAH's raw-image pass) gives the
inference part in :meth:`inference_model`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

import keras
import tensorflow as tf

from common.methods.settings import MethodSettings, check_all, is_integer, is_real  # noqa: F401

# Output names every method's model provides (by position in its outputs list).
LOGITS = "logits"
CODES = "relaxed_codes"
ALL_VARIABLES = "all"  # the one optimiser group of a method that does not define its own

# What an optimiser group minimises: None (every loss part, the training cost), the
# names of some loss parts (their sum), or a function of the loss parts.
Objective = Union[None, Sequence[str], Callable[[dict], tf.Tensor]]
_GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class OptimizerGroup:
    """One optimiser of a training step: its variables, what it minimises, its decay.

    Every group gets its own Adam (the shared settings: TF1's defaults, the learning
    rate of :meth:`HashingMethod.learning_rate`), with its own moments and step count.
    The training step runs ONE forward pass, computes every group's gradients from it
    (with the weights of that forward, before any update), then applies them group
    after group in the order :meth:`HashingMethod.optimizer_groups` lists them.

    Attributes:
        name: lower-case identifier; with several groups, the optimiser's checkpoint
            key is ``optimizer_<name>`` (one group keeps the key ``optimizer``).
        variables: the trainable variables this optimiser updates (groups must be
            disjoint; a trainable variable in no group is never updated).
        objective: None: the sum of every loss part (the logged training cost);
            a sequence of loss-part names: their sum; a callable: a function of the
            dict {part name: value} returning a scalar, which may be non-linear in
            the parts (a hinge). Under a distribution the callable receives the
            global batch's part values (all-reduced over the replicas, with gradients
            flowing to each replica's own share), so that the distributed step equals
            the single-device one; names and None stay per-replica sums (linear).
        coupled_weight_decay: PyTorch's coupled L2 (Adam's ``weight_decay``): rate *
            w is added to the gradient of every variable of the group before the
            optimiser sees it (0: none).
    """

    name: str
    variables: Sequence[Any]  # kept as a tuple
    objective: Objective = None
    coupled_weight_decay: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "variables", tuple(self.variables))
        if isinstance(self.objective, (list, tuple)):
            object.__setattr__(self, "objective", tuple(self.objective))
        check_settings([
            (isinstance(self.name, str) and bool(_GROUP_NAME.match(self.name)),
             f"optimizer group name must be a lower-case identifier, got {self.name!r}"),
            (bool(self.variables), f"optimizer group {self.name!r} has no variables"),
            (self.objective is None or callable(self.objective)
             or (bool(self.objective) and all(isinstance(k, str) for k in self.objective)),
             f"optimizer group {self.name!r}: objective must be None, loss-part names or a "
             f"callable, got {self.objective!r}"),
            (self.coupled_weight_decay >= 0,
             f"optimizer group {self.name!r}: coupled_weight_decay must be >= 0, got "
             f"{self.coupled_weight_decay}"),
        ])

    def is_plain(self, model) -> bool:
        """Whether this is the default group: every trainable variable, the whole cost."""
        trainable = model.trainable_variables
        return (self.objective is None and not self.coupled_weight_decay
                and len(self.variables) == len(trainable)
                and all(a is b for a, b in zip(self.variables, trainable)))


class HashingMethod:
    """Base class of a trainable hashing method.

    A method's settings are one frozen dataclass (:attr:`Settings`, a
    :class:`common.methods.settings.MethodSettings`): the constructor takes them as keyword
    arguments (or a ready ``settings=`` object), checks them there, and exposes each as an
    attribute of the same name; :meth:`config` records them.

    Attributes:
        Settings: the method's settings class (its name is the method's registry name).
        name: short method name ("dcbh", "ddch", ...), from :attr:`Settings`.
        output_names: names of the model's outputs, in order; must contain
            "logits" (used for accuracy) and "relaxed_codes" (signed for retrieval).
    """

    Settings: type[MethodSettings] = MethodSettings
    name: str = "method"
    output_names: tuple[str, ...] = (LOGITS, CODES)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.Settings is not MethodSettings:
            cls.name = cls.Settings.name

    def __init__(self, settings: MethodSettings | None = None, **values: Any):
        if settings is None:
            settings = self.Settings(**values)
        elif values or not isinstance(settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes a {self.Settings.__name__} or keyword "
                            "settings, not both")
        self.settings = settings
        for field in dataclasses.fields(settings):
            setattr(self, field.name, getattr(settings, field.name))

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any:
            """Each setting is an attribute, set by ``__init__``: typed here for checkers."""

    def build_model(self, num_classes: int) -> keras.Model:
        """A functional model from (batch, 32, 32, 3) preprocessed images to the outputs."""
        raise NotImplementedError

    def call_model(self, model: keras.Model, images: tf.Tensor, training: bool):
        """The model's outputs for a batch in the training and test steps.

        Default: one call of the model. A method whose training forward must do more
        than the model's own call (DDAH: leave the moving statistics to one pass) says
        so here; the outputs must be those of ``model(images, training=training)``.
        """
        return model(images, training=training)

    def loss_terms(self, model: keras.Model, outputs: dict[str, tf.Tensor],
                   labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Weighted loss parts (float32 scalars); their sum is the training cost."""
        raise NotImplementedError

    def loss_reductions(self) -> dict[str, str]:
        """How each loss part depends on the batch: "mean", "sum" or "none".

        Distributed training (common.training.distribution) needs it to make the
        replicas' parts add up to the global batch's: a batch mean is weighted by
        the replica's share of the batch, a batch sum is kept, a part that does not
        depend on the batch (weight decay) is split evenly. Every part of
        :meth:`loss_terms` must be named.
        """
        raise NotImplementedError(f"{self.name} does not say how its loss parts depend on "
                                  "the batch (loss_reductions), so it cannot be distributed")

    def before_optimizer_step(self, model: keras.Model, outputs: dict[str, tf.Tensor],
                              labels: tf.Tensor) -> None:
        """State updates applied every training step before the optimizer's."""
        return None  # a statement, not only a docstring: AutoGraph must parse the body

    def optimizer_groups(self, model: keras.Model) -> list[OptimizerGroup]:
        """The optimisers of a training step, in the order they are applied.

        Default: one group, "all": every trainable variable minimises the whole cost
        (the sum of :meth:`loss_terms`), the loop's single-Adam step. A method with
        several groups gets one Adam per group, each checkpointed (see
        :class:`OptimizerGroup`).
        """
        return [OptimizerGroup(ALL_VARIABLES, tuple(model.trainable_variables))]

    def learning_rate(self, epoch: int, base: float) -> float:
        """Every optimiser's learning rate during 0-based ``epoch`` (set at its start,
        and on resume); ``base`` is the configured rate. Default: ``base`` throughout."""
        del epoch
        return base

    def stage(self, epoch: int) -> int:
        """The training stage of 0-based ``epoch`` (default: one stage, 0, throughout).

        A method trained in stages (DFH: the features first, then the codes) changes its
        objective between them. The loop calls :meth:`start_stage` before every epoch
        (and on resume), records the stage with every epoch, and keeps its lowest-loss
        checkpoint per stage: the losses of two objectives are not comparable, so the
        first epoch of a stage always becomes ``best_loss``.
        """
        del epoch
        return 0

    def start_stage(self, model: keras.Model, stage: int) -> None:
        """Set the method's state for ``stage`` before an epoch of it (must be idempotent)."""
        del model, stage

    def inference_model(self, model: keras.Model) -> keras.Model:
        """The part of ``model`` that evaluation and export run (default: all of it).

        Its outputs must be the first outputs of :attr:`output_names`, "relaxed_codes"
        among them (same positions), and it must share ``model``'s variables.
        """
        return model

    def config(self) -> dict[str, Any]:
        """The method's settings, recorded with every run (``from_config`` inverts it)."""
        return self.settings.to_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "HashingMethod":
        """Rebuild the method from :meth:`config` (e.g. to export a finished run)."""
        if config.get("method", cls.name) != cls.name:
            raise ValueError(f"config is for method {config.get('method')!r}, not {cls.name!r}")
        config = cls.complete_config(config)
        return cls(**{k: v for k, v in config.items() if k != "method"})

    @classmethod
    def complete_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the settings it predates at the value its run had."""
        return cls.Settings.complete(config)

    def named_outputs(self, outputs) -> dict[str, tf.Tensor]:
        """Model outputs (list) -> {name: float32 tensor}."""
        items: Iterable[tuple[str, Any]]
        if isinstance(outputs, dict):
            items = outputs.items()
        else:
            items = zip(self.output_names, outputs)
        return {k: tf.cast(v, tf.float32) for k, v in items}


check_settings = check_all  # the name the methods' own checks use


def batch_mean(values: tf.Tensor) -> tf.Tensor:
    """Mean of all ``values``; 0 for an empty batch (a replica may get none).

    Bit for bit ``tf.reduce_mean`` otherwise (the same sum, divided by the count).
    """
    values = tf.convert_to_tensor(values)
    return tf.math.divide_no_nan(tf.reduce_sum(values), tf.cast(tf.size(values), values.dtype))


def sparse_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy with integer labels, mean over the batch."""
    return batch_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)))
