"""Evaluate a finished run's state, for every method: ``python -m common.cli.evaluate``.

    python -m common.cli.evaluate --model_dir runs/dcbh --hamming legacy
    python -m dcbh_tf.evaluate --model_dir runs/dcbh     # the same, refusing other methods

The method is read from the run folder's ``run_config.json`` and found in the registry
(common.methods.registry). Queries: the test split; database: the train split (without
the validation rows the run held out), or ``--database_dir``. Bad input stops with one
``error:`` line and exit code 2.
"""

from __future__ import annotations

from typing import Callable

from absl import flags

from common.cli import checks, runner
from common.cli.run_flags import CHECKPOINT, check_model_dir, key_flags_for
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_USAGE
from common.cli.tf_startup import import_tensorflow

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
checks.bound_flag("top_k", checks.MAX_TOP_K, "more than any database this project handles")
checks.bound_flag("radius", checks.MAX_BITS, "codes are at most 1024 bits")


def evaluate(method: str | None) -> dict:
    """Print (and optionally save) the figures of ``--model_dir``'s state."""
    model_dir = check_model_dir()  # before TensorFlow loads: a mistake is told at once
    import_tensorflow()  # once, its start-up notices filtered
    from common.training.saved_run import evaluate_run

    result = runner.guarded_call(lambda: evaluate_run(
        method, model_dir, CHECKPOINT.value, hamming=HAMMING.value, ties=TIES.value,
        top_k=TOP_K.value, radius=RADIUS.value, train_dir=TRAIN_DIR.value,
        test_dir=TEST_DIR.value, database_dir=DATABASE_DIR.value,
        eval_batch_norm=EVAL_BATCH_NORM.value), EXIT_USAGE)
    print(f"{result['slot']} (epoch {result['epoch']}), {result['queries']} queries x "
          f"{result['database']} database items ({result['database_dir']}"
          + (f", without the {result['validation_held_out']} validation rows"
             if result["validation_held_out"] else "")
          + f"), {result['hamming']} Hamming, {result['ties']} ties"
          + (", batch statistics" if result["eval_batch_norm"] == "batch" else "")
          + (f", {result['precision_policy']} as trained"
             if result["precision_policy"] != "float32" else "") + ":")
    print(f"  mAP {result['map']:.4f} | precision@{result['top_k']} "
          f"{result['precision_at_k']:.4f} | within radius {result['radius']}: precision "
          f"{result['precision_within_radius']:.4f}, recall {result['recall_within_radius']:.4f}")
    if OUTPUT.value:
        from common.io.atomic import write_json_atomic
        write_json_atomic(OUTPUT.value, result)
        print(f"  written to {OUTPUT.value}")
    return result


def command(method: str | None = None, module: str = __name__) -> tuple[
        Callable[[list[str]], None], Callable[[], None]]:
    """(main, run) of an evaluate command; ``method``: only that method's runs (the
    per-method modules), None: any registered method's."""
    key_flags_for(module, ("hamming", "ties", "top_k", "radius", "train_dir", "test_dir",
                           "database_dir", "eval_batch_norm", "output"))

    def main(argv: list[str]) -> None:
        check_no_arguments(argv)
        checks.check_file_flag("output", OUTPUT.value)  # not after minutes of evaluation
        evaluate(method)

    return main, lambda: runner.run_main(main)


main, run = command(module=__name__)

if __name__ == "__main__":
    run()
