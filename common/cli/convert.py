"""Command line: a folder of your own photos -> a data set the project trains on.

``python -m common.data.convert --src PHOTOS --out DATA`` reads
``PHOTOS/<identity>/<any/subfolders>/<photo>`` and writes ``DATA/train/``, ``DATA/test/``
(the original pickle layout, read by ``--dataset folder``) and ``DATA/meta.json``. The work
is :func:`common.data.photo_dataset.convert_photos` and ``write_conversion``; this module
holds the flags, the progress display and the summary.

Defaults: one test photo per identity and identities with at least three usable photos.
Own photo sets are small (a handful per person), so each identity keeps all but one photo
for training and still has a query; three is the least that leaves at least two training
photos, the fewest from which an identity's variation can be learnt at all.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from absl import flags

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.cli.checks import check_no_arguments
from common.cli.runner import fail
from common.io.names import printable

_SRC = flags.DEFINE_string("src", None,
                           "Folder of photos: SRC/<identity>/<any/subfolders>/<photo>.")
_OUT = flags.DEFINE_string("out", None, "Output folder: train/, test/ and meta.json go there "
                           "(new, empty, or a previous output of this converter).")
_TEST_PER_IDENTITY = flags.DEFINE_integer(
    "test_per_identity", 1, "Photos of each identity put in the test split (queries).",
    lower_bound=1)
_MIN_PER_IDENTITY = flags.DEFINE_integer(
    "min_per_identity", 3, "Identities with fewer usable photos are dropped "
    "(must exceed --test_per_identity).", lower_bound=2)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the splits and row order; the same photos and "
                             "flags give byte-identical files.", lower_bound=0)
_DETECTOR = flags.DEFINE_enum("detector", "auto", ["auto", "mtcnn", "center"],
                              "Face detector: mtcnn, center (centre crop, no detection), or auto "
                              "(mtcnn when installed).")
_ROWS_PER_FILE = flags.DEFINE_integer("rows_per_file", 1000, "Rows per .pkl file.", lower_bound=1)
_PROGRESS_EVERY = flags.DEFINE_integer(
    "progress_every", 100, "Without a terminal, print a progress line every N photos.",
    lower_bound=1)
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")


@flags.multi_flags_validator(["test_per_identity", "min_per_identity"],
                             message="--min_per_identity must be greater than "
                                     "--test_per_identity (every identity needs train photos)")
def _counts_fit(values: dict) -> bool:
    return values["min_per_identity"] > values["test_per_identity"]


class ProgressDisplay:
    """Shows how far a conversion is: a bar redrawn in place on a terminal, else a line
    every ``every`` photos (and at the end), so logs of long runs stay short."""

    def __init__(self, every: int = 100, stream: TextIO | None = None):
        self.every = every
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        seconds = time.perf_counter() - self.start
        if self.tty:
            now = time.perf_counter()
            if now - self._drawn < 0.1 and done < total:
                return
            self._drawn = now
            filled = int(30 * done / max(total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} photos "
                              f"{seconds:.0f}s" + ("\n" if done == total else ""))
        elif done % self.every == 0 or done == total:
            self.stream.write(f"prepared {done}/{total} photos ({seconds:.1f}s)\n")
        self.stream.flush()


def summary_lines(meta: dict, out: str, seconds: float) -> list[str]:
    """The end-of-run report: what was used, skipped and dropped, and where it went."""
    photos, settings = meta["photos"], meta["settings"]
    dropped = meta["dropped_identities"]
    lines = [
        f"converted {photos['found']} photos of {meta['num_identities'] + len(dropped)} "
        f"identities in {seconds:.1f}s (detector {settings['detector']})",
        f"  used {photos['used']}: train {meta['train_images']}, test {meta['test_images']} "
        f"({meta['num_identities']} identities, labels 0..{meta['num_identities'] - 1})",
        f"  several faces (kept the largest): {photos['several_faces']}",
        f"  skipped {photos['skipped_no_face'] + photos['skipped_unreadable']}: "
        f"no face {photos['skipped_no_face']}, unreadable {photos['skipped_unreadable']}",
        f"  dropped identities (fewer than {settings['min_per_identity']} usable photos): "
        f"{len(dropped)}"
        + (f" ({photos['not_read']} photos not read)" if photos["not_read"] else ""),
    ]
    if meta["ignored_files"]:
        lines.append(f"  ignored files (not photos): {len(meta['ignored_files'])}")
    for item in meta["skipped"][:10]:
        lines.append(f"  skipped {printable(item['file'])}: {printable(item['reason'])}")
    if len(meta["skipped"]) > 10:
        lines.append(f"  ... {len(meta['skipped']) - 10} more skipped photos in meta.json")
    lines.append(f"wrote {os.path.join(out, 'train')}/, {os.path.join(out, 'test')}/ and "
                 f"{os.path.join(out, 'meta.json')}")
    return lines


def main(argv: list[str]) -> None:
    """Convert the photos the flags name and print a summary."""
    check_no_arguments(argv)
    if not _SRC.value or not _OUT.value:
        fail("--src and --out are required (the photo folder and the folder to write)")
    checks.check_folder_flag("out", _OUT.value)
    # Cheap checks first: a wrong folder is refused before the detector loads (seconds).
    from common.data.errors import DataFormatError
    from common.data.photo_folder import list_photo_folder
    from common.data.photo_output import check_output_folder
    for flag, check in (("src", lambda: list_photo_folder(_SRC.value)),
                        ("out", lambda: check_output_folder(_OUT.value, _SRC.value))):
        try:
            check()
        except DataFormatError as exc:
            fail(f"--{flag} {exc}")
    from common.data.photo_dataset import convert_photos, write_conversion
    from common.faces import FacePreparer

    if _DETECTOR.value != "center":  # mtcnn runs on TensorFlow
        import_tensorflow()
    try:
        preparer = FacePreparer(_DETECTOR.value)
    except ValueError as exc:
        fail(f"--detector {_DETECTOR.value}: {exc}")
    conversion = convert_photos(_SRC.value, preparer, _TEST_PER_IDENTITY.value,
                                _MIN_PER_IDENTITY.value, _SEED.value,
                                progress=ProgressDisplay(_PROGRESS_EVERY.value))
    write_conversion(_OUT.value, conversion, _ROWS_PER_FILE.value, src=_SRC.value)
    print("\n".join(summary_lines(conversion.meta, _OUT.value, conversion.seconds)), flush=True)


def run() -> None:
    """Console entry point; one-line errors through common.cli.runner.run_main."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
