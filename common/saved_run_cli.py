"""Command lines on a finished run folder, shared by every method: export and evaluate.

    python -m dcbh_tf.export --model_dir runs/dcbh --export_dir exports/dcbh
    python -m dcbh_tf.evaluate --model_dir runs/dcbh --hamming legacy

A method's ``export`` / ``evaluate`` module only names its method class. Bad input
stops with one ``error:`` line and exit code 2 (as training does).
"""

from __future__ import annotations

import importlib
import os
from typing import Callable

from absl import flags, logging

from common import exits
from common.exits import EXIT_USAGE, check_no_arguments, fail

MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run folder written by the train command.")
CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best_map", ["best_map", "best_loss", "last"],
    "Which saved state: best_map (highest evaluated mAP), best_loss (lowest epoch train "
    "loss, the original's choice) or last.")
EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                 "export: output folder: new, empty, or a previous export "
                                 "(replaced atomically); anything else is refused.")
HAMMING = flags.DEFINE_enum("hamming", "exact", ["exact", "legacy"],
                            "evaluate: exact Hamming, or the original evaluation's distorted one.")
TIES = flags.DEFINE_enum("ties", "index", ["index", "expected"],
                         "evaluate: equal distances by database index, or the exact expectation.")
TOP_K = flags.DEFINE_integer("top_k", 50, "evaluate: cut-off of precision@k.", lower_bound=1)
RADIUS = flags.DEFINE_integer("radius", 2, "evaluate: Hamming radius.", lower_bound=0)
TRAIN_DIR = flags.DEFINE_string("train_dir", None,
                                "evaluate: train split folder (default: the one the run used).")
TEST_DIR = flags.DEFINE_string("test_dir", None,
                               "evaluate: test split folder (default: the one the run used).")
DATABASE_DIR = flags.DEFINE_string(
    "database_dir", None, "evaluate: score against this split as the database instead of the "
    "train split (e.g. the originals of an augmented split, to compare runs trained on "
    "different splits); normalised with the run's train constants, as an export is.")
EVAL_BATCH_NORM = flags.DEFINE_enum(
    "eval_batch_norm", "moving", ["moving", "batch"],
    "evaluate: codes from batch norm's moving statistics (inference mode, as exported) or "
    "from each batch's own statistics (the original DDAH's evaluation).")
OUTPUT = flags.DEFINE_string("output", None, "evaluate: also write the figures to this JSON file.")
exits.bound_flag("top_k", exits.MAX_TOP_K, "more than any database this project handles")
exits.bound_flag("radius", exits.MAX_BITS, "codes are at most 1024 bits")


def _guarded(work):
    """Run ``work()``; bad input (run folder, data, files, a ValueError) becomes one
    ``error:`` line with exit 2, the file named where the error knows it."""
    try:
        return work()
    except (ValueError, OSError) as exc:
        known = exits.user_error(exc)
        fail(known[0] if known else str(exc), EXIT_USAGE)


def run_export(method_cls_factory) -> dict:
    """``main`` of a method's export module.

    Args:
        method_cls_factory: a callable returning the method class (imported lazily so
            flag errors are reported before TensorFlow loads).
    """
    if not MODEL_DIR.value:
        fail("--model_dir is required (the folder a train command wrote)")
    if not EXPORT_DIR.value:
        fail("--export_dir is required")
    from common.saved_run import export_run

    logging.set_verbosity(logging.WARNING)  # SavedModel writing logs a page of INFO lines
    info = _guarded(lambda: export_run(method_cls_factory(), MODEL_DIR.value, EXPORT_DIR.value,
                                       CHECKPOINT.value))
    checkpoint = info["checkpoint"]
    metrics = checkpoint.get("metrics") or {}
    figures = f", mAP {metrics['map']:.4f}" if "map" in metrics else ""
    print(f"exported {CHECKPOINT.value} (epoch {checkpoint['epoch']}{figures}), "
          f"{info['num_bits']} bits, to {os.path.abspath(EXPORT_DIR.value)}")
    print("  SavedModel: tf.saved_model.load(dir).signatures['serving_default'](images=uint8 "
          "(N,32,32,3)) -> codes, packed, relaxed")
    print(f"  Keras model: {os.path.join(os.path.abspath(EXPORT_DIR.value), 'model.keras')}")
    return info


def run_evaluate(method_cls_factory) -> dict:
    """``main`` of a method's evaluate module: print (and optionally save) the figures."""
    if not MODEL_DIR.value:
        fail("--model_dir is required (the folder a train command wrote)")
    from common.saved_run import evaluate_run

    result = _guarded(lambda: evaluate_run(
        method_cls_factory(), MODEL_DIR.value, CHECKPOINT.value, hamming=HAMMING.value,
        ties=TIES.value, top_k=TOP_K.value, radius=RADIUS.value, train_dir=TRAIN_DIR.value,
        test_dir=TEST_DIR.value, database_dir=DATABASE_DIR.value,
        eval_batch_norm=EVAL_BATCH_NORM.value))
    print(f"{result['slot']} (epoch {result['epoch']}), {result['queries']} queries x "
          f"{result['database']} database items ({result['database_dir']}"
          + (f", without the {result['validation_held_out']} validation rows"
             if result["validation_held_out"] else "")
          + f"), {result['hamming']} Hamming, {result['ties']} ties"
          + (", batch statistics" if result["eval_batch_norm"] == "batch" else "") + ":")
    print(f"  mAP {result['map']:.4f} | precision@{result['top_k']} "
          f"{result['precision_at_k']:.4f} | within radius {result['radius']}: precision "
          f"{result['precision_within_radius']:.4f}, recall {result['recall_within_radius']:.4f}")
    if OUTPUT.value:
        from common.training.checkpoints import write_json_atomic
        write_json_atomic(OUTPUT.value, result)
        print(f"  written to {OUTPUT.value}")
    return result



def class_loader(module: str, name: str) -> Callable[[], type]:
    """A callable importing ``module.name`` when called (TensorFlow loads only then)."""
    return lambda: getattr(importlib.import_module(module), name)


def export_main(module: str, name: str) -> Callable[[list[str]], None]:
    """The absl ``main`` of a method's export module (method class ``module.name``)."""
    def main(argv: list[str]) -> None:
        check_no_arguments(argv)
        exits.check_folder_flag("export_dir", EXPORT_DIR.value)  # before TensorFlow loads
        run_export(class_loader(module, name))
    return main


def evaluate_main(module: str, name: str) -> Callable[[list[str]], None]:
    """The absl ``main`` of a method's evaluate module."""
    def main(argv: list[str]) -> None:
        check_no_arguments(argv)
        exits.check_file_flag("output", OUTPUT.value)  # not after minutes of evaluation
        run_evaluate(class_loader(module, name))
    return main


def run_app(main: Callable[[list[str]], None]) -> None:
    """Parse the flags and run ``main`` with one-line errors (see common.exits.run_main)."""
    exits.run_main(main)
