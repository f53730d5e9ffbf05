"""Export a finished run as a SavedModel, for every method: ``python -m common.cli.export``.

    python -m common.cli.export --model_dir runs/dcbh --export_dir exports/dcbh
    python -m dcbh_tf.export --model_dir runs/dcbh --export_dir exports/dcbh   # DCBH runs only

The method is read from the run folder's ``run_config.json`` and found in the registry
(common.methods.registry). The signature ``serving_default`` takes ``images`` (N, 32, 32, 3)
uint8 and returns ``codes`` (int8 +-1), ``packed`` (uint8, least significant bit first) and
``relaxed`` (float32); the train split's normalisation is baked in (common.export.serving).
``model.keras`` is saved beside it. Bad input stops with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import os
from typing import Callable

from absl import flags, logging

from common.cli import checks, runner
from common.cli.run_flags import CHECKPOINT, check_model_dir, key_flags_for
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_USAGE, fail
from common.cli.tf_startup import import_tensorflow

EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                 "export: output folder: new, empty, or a previous export "
                                 "(replaced atomically); anything else is refused.")


def export(method: str | None) -> dict:
    """Export ``--model_dir``'s state to ``--export_dir``; print where and what."""
    model_dir = check_model_dir()  # before TensorFlow loads: a mistake is told at once
    if not EXPORT_DIR.value:
        fail("--export_dir is required")
    import_tensorflow()  # once, its start-up notices filtered
    from common.training.saved_run import export_run

    logging.set_verbosity(logging.WARNING)  # SavedModel writing logs a page of INFO lines
    export_dir = EXPORT_DIR.value  # checked above
    info = runner.guarded_call(lambda: export_run(method, model_dir, export_dir,
                                                  CHECKPOINT.value), EXIT_USAGE)
    checkpoint = info["checkpoint"]
    print(f"exported {CHECKPOINT.value} (epoch {checkpoint['epoch']}{figures(checkpoint)}), "
          f"{info['num_bits']} bits, to {os.path.abspath(EXPORT_DIR.value)}")
    print("  SavedModel: tf.saved_model.load(dir).signatures['serving_default'](images=uint8 "
          "(N,32,32,3)) -> codes, packed, relaxed")
    print(f"  Keras model: {os.path.join(os.path.abspath(EXPORT_DIR.value), 'model.keras')}")
    return info


def figures(checkpoint: dict) -> str:
    """The exported state's recorded mAP, each figure named by its query split as training
    names it: a run without a validation split scores (and chose) on the test split and
    says just "mAP"; with one, "validation mAP" (what chose the state) and "test mAP"."""
    metrics = checkpoint.get("metrics") or {}
    test = checkpoint.get("test_metrics") or {}
    split = metrics.get("queries", "test")
    if split == "test":
        return f", mAP {metrics['map']:.4f}" if "map" in metrics else ""
    shown = [f"{split} mAP {metrics['map']:.4f}"] if "map" in metrics else []
    shown.append(f"test mAP {test['map']:.4f}" if "map" in test else
                 "test mAP not recorded yet (evaluate gives it)")
    return ", " + ", ".join(shown)


def command(method: str | None = None, module: str = __name__) -> tuple[
        Callable[[list[str]], None], Callable[[], None]]:
    """(main, run) of an export command; ``method``: only that method's runs, None: any."""
    key_flags_for(module, ("export_dir",))

    def main(argv: list[str]) -> None:
        check_no_arguments(argv)
        checks.check_folder_flag("export_dir", EXPORT_DIR.value)  # before TensorFlow loads
        export(method)

    return main, lambda: runner.run_main(main)


main, run = command(module=__name__)

if __name__ == "__main__":
    run()
