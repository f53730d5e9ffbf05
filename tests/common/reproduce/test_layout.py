"""The cell layout module: the folder names the harness and its readers agree on, no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

from common.reproduce.layout import cell_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


def test_seed_zero_has_no_suffix_and_other_seeds_do():
    assert cell_dir("out", "ddch@0.5", 48) == os.path.join("out", "cells", "ddch@0.5_48")
    assert cell_dir("out", "ddch@0.5", 48, 0) == os.path.join("out", "cells", "ddch@0.5_48")
    assert cell_dir("out", "dcbh", 12, 2) == os.path.join("out", "cells", "dcbh_12_s2")


def test_importing_the_layout_does_not_import_tensorflow():
    # A fresh process: this one has TensorFlow loaded by other tests already.
    code = ("import sys, common.reproduce.layout; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'numpy')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"
