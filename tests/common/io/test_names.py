"""printable: undecodable bytes of a file name shown escaped, valid text unchanged."""

from __future__ import annotations

import os

import pytest

from common.io.names import printable


@pytest.mark.parametrize("name, shown", [
    ("Zoë/李雷.jpg", "Zoë/李雷.jpg"),                # valid UTF-8: unchanged
    (os.fsdecode(b"Jos\xe9/1.jpg"), "Jos\\xe9/1.jpg"),  # a Latin-1 byte from the disk
    ("a\ud800b", "a\\ud800b"),                      # a lone surrogate no byte gave
])
def test_printable(name, shown):
    assert printable(name) == shown
    printable(name).encode("utf-8")
