"""The end of a GAN run: ``samples.png`` and ``identity_report.json`` in the run folder."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from common.io.atomic import write_json_atomic
from dfh_tf.gan.data import GanData
from dfh_tf.gan.figure import write_samples
from dfh_tf.gan.identity_check import format_report, identity_report
from dfh_tf.gan.run_folder import REPORT_FILE, SAMPLES_FILE


def write_report(generator, data: GanData, noise_dim: int, seed: int, model_dir: str,
                 evaluator_epochs: int = 15, epochs_trained: int | None = None,
                 stream: TextIO | None = None) -> dict[str, Any]:
    """Write the sample grid and the identity check of a trained generator.

    Args:
        generator: the trained G.
        data: the data it was trained on (the test split, if any, feeds the check).
        noise_dim: length of z.
        seed: the run's seed (which faces, which noises, the evaluator's seed).
        model_dir: the run folder.
        evaluator_epochs: training epochs of the independent evaluator.
        epochs_trained: recorded in the report and the figure's title.
        stream: where the summary goes (default stdout).

    Returns:
        The identity report (also in ``model_dir/identity_report.json``).
    """
    stream = stream if stream is not None else sys.stdout
    samples = os.path.join(model_dir, SAMPLES_FILE)
    title = (f"DAGAN-style G on {data.description.get('dataset', '?')}: real training face, "
             f"then 5 variants G(x, z)" + (f" (epoch {epochs_trained})" if epochs_trained else ""))
    write_samples(generator, data.train_images, data.train_labels, noise_dim, seed, samples,
                  title)
    print(f"samples: {samples}", file=stream, flush=True)
    report = identity_report(generator, data, noise_dim, seed, evaluator_epochs, stream=stream)
    report["run"] = {"model_dir": os.path.abspath(model_dir), "epochs": epochs_trained,
                     "data": data.description}
    path = os.path.join(model_dir, REPORT_FILE)
    write_json_atomic(path, report)
    print(format_report(report), file=stream, flush=True)
    print(f"identity report: {path}", file=stream, flush=True)
    return report
