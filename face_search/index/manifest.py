"""An index's manifest (``index.json``): written with a checksum of itself, checked on load.

The manifest holds the size and SHA-256 of every data file, so damaged data is refused;
but nothing checked the manifest itself, and a one-byte change loaded with changed
metadata (the model record that picks the encoder, the next gallery id, the bit count).
So a save adds ``manifest_sha256``, the SHA-256 of the manifest's canonical JSON
(sorted keys, no spaces, UTF-8) without that field, and loading refuses a manifest whose
content does not hash to it, or whose keys are not a manifest's. Manifests saved before
the field existed (the same format) load as before, unchecked; the next save of the
index (any add or remove) writes it.

Optional keys (:data:`OPTIONAL_KEYS`) may be absent, so that manifests saved before they
existed load unchanged, in the same format: ``faces``, how the index's photos were cut
into faces (``common.faces`` ``FacePreparer.preparation()`` plus the library
``versions``), written once the index holds photos.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from common.io import json_files
from face_search.errors import IndexFolderError

FORMAT = "face-search-index/1"
CHECKSUM = "manifest_sha256"
KEYS = frozenset({"format", "num_bits", "kind", "count", "next_id", "model", "identities",
                  "saved_at", "files"})
OPTIONAL_KEYS = frozenset({"faces"})


def _digest(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def encode(content: dict[str, Any]) -> bytes:
    """The bytes of ``index.json`` for ``content`` (the keys in :data:`KEYS`, and any of
    :data:`OPTIONAL_KEYS`), checksum added."""
    if not KEYS <= set(content) <= KEYS | OPTIONAL_KEYS:
        raise ValueError(f"a manifest has the keys {sorted(KEYS)} (and optionally "
                         f"{sorted(OPTIONAL_KEYS)}), got {sorted(content)}")
    sealed = dict(content, **{CHECKSUM: _digest(content)})
    return (json.dumps(sealed, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def marked(raw: bytes) -> dict[str, Any] | None:
    """The manifest in ``raw`` if it carries this format's marker (unchecked), else None."""
    try:
        manifest = json_files.loads(raw.decode("utf-8"))  # nesting too deep: ValueError
    except ValueError:  # UnicodeDecodeError is one
        return None
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        return manifest
    return None


def checked(raw: bytes, where: str) -> dict[str, Any] | None:
    """The manifest in ``raw`` (read from ``where``), None if it is not one (no marker).

    Raises:
        IndexFolderError: it has the marker but other keys than a manifest's, or its
            content does not match its checksum.
    """
    manifest = marked(raw)
    if manifest is None:
        return None
    differ = ((set(manifest) - {CHECKSUM}) ^ KEYS) - OPTIONAL_KEYS
    if differ:
        shown = ", ".join(sorted(differ)[:5])
        raise IndexFolderError(f"{where}: damaged (keys differ from a manifest's: {shown}); "
                               "rebuild the index")
    if CHECKSUM in manifest:
        content = {k: v for k, v in manifest.items() if k != CHECKSUM}
        if manifest[CHECKSUM] != _digest(content):
            raise IndexFolderError(f"{where}: damaged (its content does not match its "
                                   f"{CHECKSUM}); rebuild the index")
    return manifest
