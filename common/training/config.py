"""How to train: the settings every method's run shares (the method's own live in its
settings, common.methods.settings).

Why a module of its own: the command line, the loop, the run's recorded config and the
tests all need the one definition of a training setting and its check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.metrics import HAMMING_MODES, TIE_MODES
from common.training.distribution import DISTRIBUTIONS
from common.training.evaluate import EVAL_BATCH_NORMS
from common.training.sparse_gradients import ORIGINAL_SPARSE_ADAM, SPARSE_ADAM_MODES


@dataclass(kw_only=True)
class TrainConfig:
    """How to train (the method's own settings live in the method).

    Attributes:
        epochs: total epochs of the run (a resumed run continues up to this number).
        model_dir: run folder: checkpoints, run_config.json, metrics.json, tensorboard/.
        batch_size: examples per step (original 256; the last batch holds the rest).
        learning_rate: Adam's step size (original 1e-3).
        adam_epsilon: Adam's epsilon; 1e-8 is TF1's default (Keras' is 1e-7).
        sparse_adam: how Adam takes a sparse gradient with repeated rows (the centers'):
            "tf1" sums the rows first, as the original's Adam did; "keras" is Keras 3's
            per-row update (common.training.sparse_gradients).
        shuffle: reshuffle every epoch (seeded by (seed, epoch)); the original did not.
        seed: seeds weights initialisation and shuffles.
        eval_every: evaluate retrieval every this many epochs (0 = only at the end).
        hamming, ties, top_k, radius: evaluation protocol (common.metrics).
        eval_batch_norm: how codes are computed: "moving" (inference mode) or "batch"
            (each batch's own statistics, the original DDAH's evaluation;
            common.training.evaluate.EVAL_BATCH_NORMS).
        mixed_precision: mixed_float16 on GPU (with loss scaling), mixed_bfloat16 on CPU.
        jit_compile: XLA-compile the training step.
        deterministic: deterministic TensorFlow ops (bit-exact reruns and resumes).
        distribution: "default" (one device), "mirrored" (the local GPUs, or the
            logical CPU devices) or "multi_worker" (the workers TF_CONFIG names, the
            chief alone writing ``model_dir``); ``batch_size`` is the global batch
            (common.training.distribution).
        log_every_steps: progress inside an epoch: a bar redrawn in place on a terminal,
            elsewhere a line every this many steps (0 = neither;
            common.io.progress).
        max_steps_per_epoch: cut epochs short (tests, smoke runs).
        eval_batch_size: batch size when computing codes.
    """

    epochs: int
    model_dir: str
    batch_size: int = 256
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-8
    sparse_adam: str = ORIGINAL_SPARSE_ADAM
    shuffle: bool = False
    seed: int = 0
    eval_every: int = 100
    hamming: str = "exact"
    ties: str = "index"
    top_k: int = 50
    radius: int = 2
    eval_batch_norm: str = "moving"
    mixed_precision: bool = False
    jit_compile: bool = False
    deterministic: bool = False
    distribution: str = "default"
    log_every_steps: int = 100
    max_steps_per_epoch: int | None = None
    eval_batch_size: int = 1024

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (bool(self.model_dir), "model_dir must be set"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.adam_epsilon > 0, f"adam_epsilon must be > 0, got {self.adam_epsilon}"),
            (self.sparse_adam in SPARSE_ADAM_MODES,
             f"sparse_adam must be one of {SPARSE_ADAM_MODES}, got {self.sparse_adam!r}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.distribution in DISTRIBUTIONS,
             f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}"),
            (not (self.jit_compile and self.distribution != "default"),
             "jit_compile is not supported with a distribution: XLA-compiling the replicas' "
             "step failed here (on logical CPU devices XLA reads one replica's variables from "
             "another device) and has not been verified on several GPUs"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.hamming in HAMMING_MODES,
             f"hamming must be one of {HAMMING_MODES}, got {self.hamming!r}"),
            (self.ties in TIE_MODES, f"ties must be one of {TIE_MODES}, got {self.ties!r}"),
            (self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}"),
            (self.radius >= 0, f"radius must be >= 0, got {self.radius}"),
            (self.eval_batch_norm in EVAL_BATCH_NORMS,
             f"eval_batch_norm must be one of {EVAL_BATCH_NORMS}, got {self.eval_batch_norm!r}"),
            (self.log_every_steps >= 0,
             f"log_every_steps must be >= 0, got {self.log_every_steps}"),
            (self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
             f"max_steps_per_epoch must be >= 1, got {self.max_steps_per_epoch}"),
            (self.eval_batch_size >= 1,
             f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def eval_settings(self) -> dict[str, Any]:
        return {"hamming": self.hamming, "ties": self.ties, "top_k": self.top_k,
                "radius": self.radius, "eval_batch_norm": self.eval_batch_norm}
