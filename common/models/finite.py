"""Which variables of a model (or optimiser) hold NaN or inf.

Why: a diverged state must never be saved, evaluated or exported as good; training checks
every variable after each epoch, and loading a saved state checks it again.
"""

from __future__ import annotations

import numpy as np


def non_finite_variables(variables) -> list[str]:
    """Names of the floating-point variables holding NaN or inf (empty when all is well)."""
    bad = []
    for variable in variables:
        value = np.asarray(variable.numpy())
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad.append(variable.path if hasattr(variable, "path") else variable.name)
    return bad
