"""How much the tie rule moves mAP: trained codes of real faces against degenerate codes.

For every finished cell of a reproduce table (``OUT/cells/*/codes.npz``) prints the
mAP with ``ties="index"`` and ``ties="expected"`` and their difference; then the
same for degenerate codes on the same labels: the cell's codes cut to their first
``--few_bits`` bits (the rest set to +1), the codes of an untrained DCBH (with
``--untrained``, which needs the data), one code for every image (the database
as stored and in label order), and one code for every image of a small
label-ordered set, where the rule matters most.

    python bench/tie_rule_effect.py --table runs/lfw_table
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_DATA = os.path.join(ROOT, "..", "shared", "data", "lfw_deepfunneled_32")

flags.DEFINE_string("table", None, "a reproduce --out folder with finished cells")
flags.DEFINE_integer("few_bits", 2, "bits kept in the cut-down codes")
flags.DEFINE_bool("untrained", True, "also an untrained DCBH's codes (needs --data)")
flags.DEFINE_string("data", DEFAULT_DATA, "folder with train/ and test/ (for --untrained)")
flags.DEFINE_float("width_multiplier", 0.25, "backbone width of the untrained DCBH")
FLAGS = flags.FLAGS


def tie_pair(queries, query_labels, database, db_labels) -> tuple[float, float]:
    """(mAP with index ties, mAP with expected ties), exact Hamming."""
    from common.metrics import retrieval_metrics
    return tuple(retrieval_metrics(queries, query_labels, database, db_labels, ties=ties)["map"]
                 for ties in ("index", "expected"))


def line(name: str, pair: tuple[float, float], distinct: int) -> str:
    index, expected = pair
    return (f"| {name} | {distinct} | {index:.4f} | {expected:.4f} | "
            f"{100 * (index - expected):+.2f} |")


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.table or not os.path.isdir(os.path.join(FLAGS.table, "cells")):
        sys.exit(f"--table must be a reproduce output folder with cells/, got {FLAGS.table}")
    print("| codes | distinct database codes | mAP index ties | mAP expected ties | "
          "index - expected (points) |")
    print("|---|---|---|---|---|")
    labels = None
    for path in sorted(glob.glob(os.path.join(FLAGS.table, "cells", "*", "codes.npz"))):
        z = np.load(path)
        q, ql, d, dl = z["query_codes"], z["query_labels"], z["db_codes"], z["db_labels"]
        name = os.path.basename(os.path.dirname(path))
        print(line(f"{name} (trained)", tie_pair(q, ql, d, dl), len(np.unique(d >= 0, axis=0))))
        if name.startswith("dcbh_12"):
            labels = ql, dl
            cut_q, cut_d = np.ones_like(q), np.ones_like(d)
            cut_q[:, :FLAGS.few_bits], cut_d[:, :FLAGS.few_bits] = (q[:, :FLAGS.few_bits],
                                                                    d[:, :FLAGS.few_bits])
            print(line(f"{name} cut to {FLAGS.few_bits} bits", tie_pair(cut_q, ql, cut_d, dl),
                       len(np.unique(cut_d >= 0, axis=0))))
    if labels is None:
        return
    ql, dl = labels
    same_q, same_d = np.ones((len(ql), 12)), np.ones((len(dl), 12))
    print(line("one code for every image", tie_pair(same_q, ql, same_d, dl), 1))
    order = np.argsort(dl, kind="stable")  # the same database stored in label order
    print(line("one code for every image, database in label order",
               tie_pair(same_q, ql, same_d, dl[order]), 1))
    for classes in (5, 10):  # a small label-ordered set: where the rule matters most
        small_dl, small_ql = np.repeat(np.arange(classes), 40), np.repeat(np.arange(classes), 5)
        print(line(f"one code, {classes} classes x 40 in label order",
                   tie_pair(np.ones((len(small_ql), 12)), small_ql,
                            np.ones((len(small_dl), 12)), small_dl), 1))
    if FLAGS.untrained and os.path.isdir(os.path.join(FLAGS.data, "train")):
        import keras
        from common.training.data import load_split_data
        from common.training.evaluate import compute_codes
        from dcbh_tf.method import DCBH

        data = load_split_data("folder", None, os.path.join(FLAGS.data, "train"),
                               os.path.join(FLAGS.data, "test"))
        keras.utils.set_random_seed(0)
        method = DCBH(num_bits=12, width_multiplier=FLAGS.width_multiplier)
        model = method.build_model(data.num_classes)
        q = compute_codes(model, method, data.test_images)
        d = compute_codes(model, method, data.train_images)
        print(line("untrained DCBH, 12 bits", tie_pair(q, data.test_labels, d,
                                                        data.train_labels),
                   len(np.unique(d >= 0, axis=0))))


if __name__ == "__main__":
    app.run(main)
