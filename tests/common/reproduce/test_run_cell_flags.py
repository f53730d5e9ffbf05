"""A cell run alone (``python -m common.reproduce.run_cell``) gets the harness's settings.

The docs promise that a cell run alone with the table's flags is the cell the harness would
run and reuse: every setting both commands have must default alike, or a flag left out
gives another cell (as ``--validation_fraction`` once did: 0 alone, 0.1 in the harness).
Each command defines its flags on absl's global registry, so each is read in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from checkout import ROOT

READ_DEFAULTS = """
import json, sys
from absl import flags
import {module}
print(json.dumps({{name: flags.FLAGS[name].default for name in flags.FLAGS
                   if flags.FLAGS.find_module_defining_flag(name) == "{module}"}}))
"""


def _defaults(module: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", READ_DEFAULTS.format(module=module)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                            check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_every_setting_of_both_commands_has_the_same_default():
    alone, harness = _defaults("common.reproduce.run_cell"), _defaults("common.reproduce.__main__")
    # --bits is one length alone and the list of columns in the harness: not one setting.
    shared = sorted(set(alone) & set(harness) - {"bits"})
    assert {"validation_fraction", "epochs", "batch_size", "width_multiplier",
            "eval_every", "checkpoint"} <= set(shared)
    assert {name: alone[name] for name in shared} == {name: harness[name] for name in shared}
