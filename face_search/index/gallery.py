"""A gallery of packed face codes with their identities, searchable by Hamming distance.

Results follow the project evaluator's rule (``common.metrics``, ``ties="index"``): exact
Hamming distance, equal distances ordered by gallery id. Gallery ids are stable: given
once, increasing, never reused after a removal, so a search result can be cited.

Kinds (``GalleryIndex.create(bits, kind)``), both exact:

* ``"exact"``: faiss's flat binary scan (``face_search.index.exact``), time linear in the
  gallery; the right choice up to about a million items.
* ``"mih"``: multi-index hashing (``face_search.index.mih``), sub-linear on codes that cluster
  by identity (10x faster than the scan at 1M faces, 44x at 10M: docs/BENCHMARKS.md),
  falling back to the flat scan for a query far from everything. Its tables are built on
  the first search after a change.

Radius searches (:meth:`GalleryIndex.within_radius`) always use the flat scan.
Searches may run in parallel threads; ``add`` and ``remove`` must not run during them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from face_search.index.codes import check_num_bits, check_packed, code_bytes, widen
from face_search.index.columns import NameColumn, TextColumn, utf8

if TYPE_CHECKING:
    from face_search.index.mih import MultiIndexHash
from face_search.errors import IndexFolderError, UnknownIdError
from face_search.index import store
from face_search.index.exact import FlatSearcher

KINDS = ("exact", "mih")


class ItemMeta(NamedTuple):
    """What a gallery item is: who, under which integer label, from which photo or row."""

    identity: str
    label: int
    source: str


@dataclass(frozen=True)
class Hit:
    """One search result."""

    gallery_id: int
    distance: int
    identity: str
    label: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_columns(metadata: Sequence[Any], count: int) -> tuple[list[str], np.ndarray, list[str]]:
    """(identities, labels, sources) of ``metadata``: ItemMeta, tuples or mappings."""
    if len(metadata) != count:
        raise ValueError(f"{count} codes but {len(metadata)} metadata items")
    identities, labels, sources = [], [], []
    for item in metadata:
        if isinstance(item, Mapping):
            identity, label, source = item["identity"], item["label"], item["source"]
        else:
            identity, label, source = item
        identities.append(identity)
        labels.append(label)
        sources.append(source)
    return identities, np.asarray(labels, np.int64).reshape(count), sources


# The fields of a model record (``CodeEncoder.describe()``) and their JSON types; a record
# may lack any of them (older or hand-made records), but one present has its type.
MODEL_FIELDS: dict[str, tuple[type, ...]] = {
    "path": (str,), "kind": (str,), "fingerprint": (str,), "num_bits": (int,),
    "method": (str, type(None)), "checkpoint": (str, type(None)), "epoch": (int, type(None))}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_model_record(model: Any, num_bits: int) -> None:
    """ValueError (naming ``index.json``) unless ``model`` is None or a model record for
    ``num_bits``-bit codes: an object whose fields (:data:`MODEL_FIELDS`, and
    ``probe_relaxed``: rows of numbers) have their types. A record of another shape would
    break every command that reads it, and a save would seal it as valid."""
    if model is None:
        return
    where = 'index.json: "model"'
    if not isinstance(model, dict):
        raise ValueError(f"{where} is not a model record (an object, or null): {_shown(model)}")
    for key, types in MODEL_FIELDS.items():
        if key in model and (isinstance(model[key], bool) or not isinstance(model[key], types)):
            kinds = " or ".join("null" if t is type(None) else
                                {str: "a string", int: "an integer"}[t] for t in types)
            raise ValueError(f"{where}: {key} must be {kinds}, got {_shown(model[key])}")
    if "num_bits" in model and model["num_bits"] != num_bits:
        raise ValueError(f"{where}: num_bits is {model['num_bits']}, the index holds "
                         f"{num_bits}-bit codes")
    probes = model.get("probe_relaxed")
    if "probe_relaxed" in model and not (isinstance(probes, list) and all(
            isinstance(row, list) and all(_number(v) for v in row) for row in probes)):
        raise ValueError(f"{where}: probe_relaxed must be rows of numbers, got "
                         f"{_shown(probes)}")


class GalleryIndex:
    """Packed codes + per-item metadata + an exact searcher. See the module docstring."""

    def __init__(self, num_bits: int, kind: str = "exact") -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        self.num_bits = check_num_bits(num_bits)
        self.kind = kind
        self.model: dict[str, Any] | None = None  # the encoder that made the codes
        # how its photos were cut into faces (common.faces FacePreparer.preparation() and
        # "versions"); None: no photo recorded (pickle rows only, or saved before the record)
        self.faces: dict[str, Any] | None = None
        self.next_id = 0
        self._wide = np.zeros((0, 8 * (-(-self.num_bits // 64))), np.uint8)
        self._ids = np.zeros(0, np.int64)
        self._labels = np.zeros(0, np.int64)
        self._identities = NameColumn()
        self._sources = TextColumn()
        self._flat = FlatSearcher(self.num_bits)
        self._mih: MultiIndexHash | None = None  # built on demand (kind "mih")
        self._mih_lock = threading.Lock()

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, num_bits: int, kind: str = "exact") -> "GalleryIndex":
        """An empty index for codes of ``num_bits`` bits."""
        return cls(num_bits, kind)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def code_bytes(self) -> int:
        return code_bytes(self.num_bits)

    @property
    def ids(self) -> np.ndarray:
        """Gallery ids, increasing (a copy)."""
        return self._ids.copy()

    @property
    def codes(self) -> np.ndarray:
        """Packed codes uint8 (N, code_bytes), in gallery-id order (a copy)."""
        return self._wide[:, :self.code_bytes].copy()

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    def add(self, packed: np.ndarray, metadata: Sequence[Any]) -> np.ndarray:
        """Add items; ``metadata[i]`` (ItemMeta, (identity, label, source) or a mapping)
        describes ``packed[i]``. Returns their new gallery ids."""
        packed = check_packed(packed, self.num_bits)
        identities, labels, sources = _as_columns(metadata, len(packed))
        return self.add_columns(packed, identities, labels, sources)

    def add_columns(self, packed: np.ndarray, identities: Iterable[str], labels: Any,
                    sources: Iterable[str]) -> np.ndarray:
        """:meth:`add` with the metadata as three columns (faster for millions of items)."""
        # Everything that can fail is checked before the index changes: a refused add leaves
        # it as it was (a half-added one would save as a damaged index).
        packed = check_packed(packed, self.num_bits)
        identities, sources = [str(n) for n in identities], list(sources)
        labels = np.asarray(labels, np.int64)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one number per item, got shape {labels.shape}")
        if not len(identities) == len(labels) == len(sources) == len(packed):
            raise ValueError(f"{len(packed)} codes but {len(identities)} identities, "
                             f"{len(labels)} labels and {len(sources)} sources")
        ids = np.arange(self.next_id, self.next_id + len(packed), dtype=np.int64)
        if not len(ids):
            return ids
        utf8(identities, "an identity")
        encoded_sources = utf8(sources, "a source")
        self._wide = np.concatenate([self._wide, widen(packed, self.num_bits)])
        self._ids = np.concatenate([self._ids, ids])
        self._labels = np.concatenate([self._labels, labels])
        self._identities.extend(identities)
        self._sources.extend_encoded(encoded_sources)
        self.next_id += len(ids)
        self._flat.append(self._wide, len(ids))
        self._mih = None
        return ids

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the items with these gallery ids (all or none). Returns how many.

        Raises:
            UnknownIdError: an id is not in the index (nothing is removed).
        """
        listed = list(ids)
        try:
            ids, outside = np.unique(np.asarray(listed, np.int64)), []
        except OverflowError:  # an id no int64 holds is in no index: unknown like others
            limits = np.iinfo(np.int64)
            inside = [limits.min <= int(i) <= limits.max for i in listed]
            outside = [int(i) for i, ok in zip(listed, inside) if not ok]
            ids = np.unique(np.asarray([i for i, ok in zip(listed, inside) if ok], np.int64))
        present = np.isin(ids, self._ids)
        if outside or not np.all(present):
            missing = sorted(set(outside) | set(ids[~present].tolist()))
            raise UnknownIdError(f"gallery ids not in the index: "
                                 f"{', '.join(str(i) for i in missing[:10])}"
                                 + (" ..." if len(missing) > 10 else ""))
        if not len(ids):
            return 0
        keep = ~np.isin(self._ids, ids)
        self._wide = self._wide[keep]
        self._ids = self._ids[keep]
        self._labels = self._labels[keep]
        self._identities = self._identities.keep(keep)
        self._sources = self._sources.keep(keep)
        self._changed()
        return len(ids)

    def ids_of_identities(self, identities: Iterable[str]) -> np.ndarray:
        """Gallery ids of every item of these identities (increasing)."""
        found = [self._identities.code_of(str(n)) for n in identities]
        codes = [c for c in found if c is not None]
        return self._ids[np.isin(self._identities.codes, codes)]

    def item(self, gallery_id: int) -> ItemMeta:
        """The metadata of one item (UnknownIdError if absent)."""
        pos = self._position(gallery_id)
        return ItemMeta(self._identities[pos], int(self._labels[pos]), self._sources[pos])

    def any_source_ends_with(self, suffixes: Iterable[str]) -> bool:
        """Whether an item's source ends with one of ``suffixes`` (case-insensitive; e.g.
        photo extensions), in one vectorised pass over the sources."""
        return self._sources.any_ends_with(suffixes)

    def identity_counts(self) -> dict[str, int]:
        """Items per identity."""
        counts = np.bincount(self._identities.codes, minlength=len(self._identities.names))
        return {name: int(c) for name, c in zip(self._identities.names, counts) if c}

    def identity_labels(self) -> dict[str, int]:
        """Each identity's label (that of its first item)."""
        codes, first = np.unique(self._identities.codes, return_index=True)
        return {self._identities.names[c]: int(self._labels[i]) for c, i in zip(codes, first)}

    def _position(self, gallery_id: int) -> int:
        pos = int(np.searchsorted(self._ids, gallery_id))
        if pos >= len(self._ids) or self._ids[pos] != gallery_id:
            raise UnknownIdError(f"gallery id {gallery_id} is not in the index")
        return pos

    def _changed(self) -> None:
        self._flat.reset(self._wide)
        self._mih = None

    # ------------------------------------------------------------------ searching
    def search(self, queries_packed: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``k`` nearest items of each query, by (distance, gallery id)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = widen(check_packed(queries_packed, self.num_bits, "queries"), self.num_bits)
        dist, pos = self._knn(queries, int(k))
        return [self._hits(d, p) for d, p in zip(dist, pos)]

    def within_radius(self, queries_packed: np.ndarray, radius: int) -> list[list[Hit]]:
        """Every item within Hamming ``radius`` of each query, by (distance, gallery id)."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        queries = widen(check_packed(queries_packed, self.num_bits, "queries"), self.num_bits)
        return [self._hits(d, p) for d, p in self._flat.within(queries, int(radius))]

    def _knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from face_search.index import mih

        k = min(k, len(self))
        if self.kind != "mih" or k == 0 or k > mih.MAX_K or not len(queries):
            return self._flat.knn(queries, k)
        with self._mih_lock:  # searches may run in threads; one builds the tables
            if self._mih is None:
                self._mih = mih.MultiIndexHash(self.num_bits, self._wide.view(np.uint64))
            tables = self._mih
        dist, pos, complete = tables.knn(queries.view(np.uint64), k)
        if not np.all(complete):
            rest = np.flatnonzero(~complete)
            dist[rest], pos[rest] = self._flat.knn(queries[rest], k)
        return dist, pos

    def _hits(self, dist: np.ndarray, pos: np.ndarray) -> list[Hit]:
        names = self._identities.names
        return [Hit(i, d, names[c], label, self._sources[p]) for i, d, c, label, p in zip(
            self._ids[pos].tolist(), np.asarray(dist).tolist(),
            self._identities.codes[pos].tolist(), self._labels[pos].tolist(), pos.tolist())]

    # ------------------------------------------------------------------ persistence
    def arrays(self) -> dict[str, Any]:
        """Everything ``face_search.index.store`` writes: numpy arrays and the name table."""
        return {"codes": self.codes, "ids": self._ids, "labels": self._labels,
                "identity_codes": self._identities.codes, "identity_names": self._identities.names,
                "sources": self._sources.data, "source_ends": self._sources.ends}

    @classmethod
    def from_arrays(cls, num_bits: int, kind: str, next_id: int, model: dict | None,
                    arrays: Mapping[str, Any],
                    faces: dict[str, Any] | None = None) -> "GalleryIndex":
        """The index :meth:`arrays` described (ValueError naming what does not fit: the
        arrays, a ``model`` that is no model record, :func:`check_model_record`);
        ``faces``: how its photos were prepared (the manifest's optional record)."""
        check_model_record(model, num_bits)
        if faces is not None and (not isinstance(faces, dict)
                                  or not isinstance(faces.get("detector"), str)):
            raise ValueError(f"faces: not a face preparation record: {faces!r}")
        index = cls(num_bits, kind)
        codes = check_packed(arrays["codes"], index.num_bits, "codes.npy")
        ids, labels = arrays["ids"], arrays["labels"]
        for name, array in (("ids", ids), ("labels", labels)):
            if array.dtype != np.int64 or array.shape != (len(codes),):
                raise ValueError(f"{name}.npy: expected int64 ({len(codes)},), got "
                                 f"{array.dtype} {array.shape}")
        if len(ids) and (ids[0] < 0 or np.any(np.diff(ids) <= 0) or ids[-1] >= next_id):
            raise ValueError("ids.npy: gallery ids must increase and stay below next_id")
        identities = NameColumn(arrays["identity_names"], arrays["identity_codes"])
        identities.check("identity_codes.npy")
        sources = TextColumn(arrays["sources"], arrays["source_ends"])
        sources.check("source_ends.npy")
        if not len(identities) == len(sources) == len(codes):
            raise ValueError(f"{len(codes)} codes but {len(identities)} identities and "
                             f"{len(sources)} sources")
        index._wide = widen(codes, index.num_bits)
        index._ids, index._labels = ids, labels
        index._identities, index._sources = identities, sources
        index.next_id, index.model, index.faces = int(next_id), model, faces
        index._changed()
        return index

    def save(self, folder: str) -> str:
        """Write the index to ``folder`` atomically (``face_search.index.store``).

        Returns the folder's absolute path.
        """
        header = {"num_bits": self.num_bits, "kind": self.kind, "count": len(self),
                  "next_id": int(self.next_id), "model": self.model,
                  "identities": len(self.identity_counts())}
        if self.faces is not None:  # optional: an index of pickle rows has none
            header["faces"] = self.faces
        return store.save_folder(folder, self.arrays(), header)

    @classmethod
    def load(cls, folder: str) -> "GalleryIndex":
        """Read an index ``save`` wrote (IndexFolderError if missing or damaged)."""
        return cls.load_saved(folder)[0]

    @classmethod
    def load_saved(cls, folder: str) -> tuple["GalleryIndex", dict[str, Any]]:
        """``(index, manifest)`` of the index in ``folder``, both from one save.

        Raises:
            IndexFolderError: missing, not an index, or damaged (the file is named).
            IndexBusyError: the folder stayed missing while another process saved it.
        """
        manifest, arrays = store.load_folder(folder)
        try:
            index = cls.from_arrays(manifest["num_bits"], manifest["kind"],
                                    manifest["next_id"], manifest["model"], arrays,
                                    manifest.get("faces"))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFolderError(f"{os.path.abspath(folder)}: damaged index ({exc})") from None
        return index, manifest
