"""The embedded default data set: synthetic face identities in the original layout."""

from common.synthetic.generator import (
    FAMILY_SIZE,
    GENERATOR_VERSION,
    generate_identity_dataset,
    identity_template,
    write_synthetic_dataset,
)

__all__ = [
    "FAMILY_SIZE",
    "GENERATOR_VERSION",
    "generate_identity_dataset",
    "identity_template",
    "write_synthetic_dataset",
]
