"""Which saved state is best: evaluating slots' states and naming ``best_map``.

Why a module of its own: the slots (``last``, ``best_loss``, ``best_map``) are the run's
answer to "which weights?", and choosing them is where a results table is honest or not.
``best_map`` is the evaluated state with the highest mAP **on the selection split**: the
validation split when the data has one (common.data.validation_split), else the test
split, as the original code did (which flatters every method; the run's report says which).
A state's figures are computed once per query split and protocol and stored with it
(in its record and, for the selection split, in its own ``metrics.json``, so that
``best_map`` survives an index rebuild).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

from common.io.faults import crash_point
from common.training.evaluate import evaluate_retrieval

REPORTED_SLOTS = ("last", "best_loss", "best_map")
# What a state's cached figures were computed with when they did not say (older runs).
EVAL_SETTINGS_BEFORE_THEY_EXISTED = {"eval_batch_norm": "moving", "queries": "test"}


class SlotSelection:
    """Evaluates the run's slots and keeps ``best_map`` pointing at the best state.

    Args:
        store: the run's checkpoint store (common.runs.checkpoints.store).
        model, method, data, config: the live model (it always holds ``last``'s weights
            when a slot is evaluated), its method, the run's data and TrainConfig.
        say: prints a line a person reads.
    """

    def __init__(self, store, model, method, data, config, say: Callable[[str], None]):
        self.store, self.model, self.method = store, model, method
        self.data, self.config, self.say = data, config, say

    @property
    def split(self) -> str:
        """The query split that selects ``best_map``: validation when the data has one,
        else the test split (the original's way)."""
        return "validation" if self.data.has_validation else "test"

    @contextlib.contextmanager
    def weights_of(self, slot: str) -> Iterator[None]:
        """Temporarily load a slot's model weights; the live weights come back after.

        The live weights always equal ``last`` when this is called (right after a save
        or a restore), so ``last``'s own state needs no swap.
        """
        record, last = self.store.info(slot), self.store.info("last")
        if last is not None and record["dir"] == last["dir"]:
            yield
            return
        live = [v.numpy() for v in self.model.variables]
        try:
            self.store.restore_model(slot, self.model)
            yield
        finally:
            for variable, value in zip(self.model.variables, live):
                variable.assign(value)

    def metrics_of(self, slot: str, current_epoch: int,
                   queries: str | None = None) -> dict[str, Any]:
        """Retrieval metrics of a slot's state, computed once per state, query split and
        protocol (``queries``: default the selection split)."""
        queries = queries or self.split
        key = "metrics" if queries == self.split else f"{queries}_metrics"
        record = self.store.info(slot)
        settings = {**self.config.eval_settings(), "queries": queries}
        cached = record.get(key)
        if cached and all({**EVAL_SETTINGS_BEFORE_THEY_EXISTED, **cached}.get(k) == v
                          for k, v in settings.items()):
            return cached
        start = time.perf_counter()
        with self.weights_of(slot):
            figures = evaluate_retrieval(self.model, self.method, self.data,
                                         batch_size=self.config.eval_batch_size, **settings)
        metrics = dict(figures, **settings, evaluated_at_epoch=current_epoch,
                       seconds=round(time.perf_counter() - start, 3))
        crash_point("eval:computed")
        self.store.annotate_state(record["dir"], **{key: metrics})
        crash_point("eval:annotated")
        split = "" if queries == "test" and not self.data.has_validation else f"{queries} "
        cfg = self.config
        self.say(f"retrieval of {slot} (epoch {record['epoch']}): {split}mAP "
                 f"{figures['map']:.4f}, precision@{cfg.top_k} {figures['precision_at_k']:.4f}, "
                 f"precision/recall within radius {cfg.radius} "
                 f"{figures['precision_within_radius']:.4f} / "
                 f"{figures['recall_within_radius']:.4f} ({cfg.hamming} Hamming, "
                 f"{cfg.ties} ties) in {metrics['seconds']:.1f} s")
        return metrics

    def consider_for_best_map(self, slot: str, current_epoch: int) -> dict[str, Any]:
        """Evaluate ``slot``; make ``best_map`` name its state if its mAP is the best so far."""
        metrics = self.metrics_of(slot, current_epoch)
        if self.store.has("best_map"):
            best = self.metrics_of("best_map", current_epoch)
            if not metrics["map"] > best["map"]:
                return metrics
        self.store.point("best_map", slot)
        return metrics

    def due(self, epoch: int) -> bool:
        """Whether the periodic evaluation follows ``epoch`` (the final one is separate)."""
        every = self.config.eval_every
        return bool(every) and epoch % every == 0 and 0 < epoch < self.config.epochs

    def periodic(self, epoch: int) -> dict[str, Any]:
        """Evaluate ``best_loss`` after ``epoch`` (idempotent: figures are cached per state,
        so a resumed run simply redoes the evaluation a kill interrupted)."""
        return self.consider_for_best_map("best_loss", epoch)

    def final(self, epoch: int) -> dict[str, dict[str, Any]]:
        """At the end: ``best_loss`` and ``last`` are candidates too; with a validation
        split, the three reported states are then scored once on the test split."""
        figures = {slot: self.consider_for_best_map(slot, epoch) for slot in ("best_loss", "last")}
        if self.data.has_validation:
            for slot in REPORTED_SLOTS:
                self.metrics_of(slot, epoch, queries="test")
        return figures
