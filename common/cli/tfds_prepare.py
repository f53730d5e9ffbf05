"""``python -m common.data.tfds_builder``: prepare the tensorflow-datasets builder's data.

    python -m common.data.tfds_builder --config facescrub --manual_dir /path/to/ddh_folders

Like every command of the project: flags checked first, bad data answered with one
``error:`` line naming the file and exit code 2 (common.cli.runner).
"""

from __future__ import annotations

from absl import flags

from common.cli import runner
from common.cli.checks import check_no_arguments

CONFIG = flags.DEFINE_string(
    "config", "folder", "A built-in config (folder, youtube_faces, facescrub), or a new name "
    "for a custom one given by --train_folder/--test_folder/--num_classes.")
MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder holding the data folders "
                                 "(default: <data_dir>/downloads/manual).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: ~/tensorflow_datasets).")
TRAIN_FOLDER = flags.DEFINE_string("train_folder", None, "Custom config: train (database) folder.")
TEST_FOLDER = flags.DEFINE_string("test_folder", None, "Custom config: test (query) folder.")
NUM_CLASSES = flags.DEFINE_integer("num_classes", None, "Custom config: number of identities.",
                                   lower_bound=2)


def main(argv: list[str]) -> None:
    """Prepare the config the flags name and print its splits."""
    check_no_arguments(argv)
    from common.data.tfds_builder import prepare  # tensorflow_datasets: seconds to import

    builder = runner.guarded_call(lambda: prepare(
        CONFIG.value, MANUAL_DIR.value, DATA_DIR.value, TRAIN_FOLDER.value, TEST_FOLDER.value,
        NUM_CLASSES.value))
    for name, split in sorted(builder.info.splits.items()):
        print(f"{builder.info.full_name} {name}: {split.num_examples} examples")
    print(f"prepared in {builder.data_dir}")


def run() -> None:
    """Console-script entry point (one-line errors: common.cli.runner.run_main)."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
