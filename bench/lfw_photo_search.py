"""Face search on real faces: an LFW gallery, searched with LFW faces and unaligned photos.

Builds a gallery index of ``lfw_deepfunneled_32/train`` (3,927 faces of 311 people) with
``--model`` (a trained LFW run folder or export), then prints top-1 and top-10 identity
accuracy of the searches a user of ``face_search`` would run:

(a) the 32x32 test split (630 faces, other photos of the gallery's people), searched as
    they are;
(b) the 96 unaligned photos of ``lfw_photos_sample/<person>/*.jpg`` (12 people), each
    going through the face preparation (``common.faces``) with every ``--detectors``
    (mtcnn finds and levels the face; center is the cut the 32x32 set was made with).

A photo's person is its folder's name, matched to the gallery's labels through the
``identities`` list of the data set's meta.json (label -> name). A photo whose face is not
found counts as a miss. Ranks follow the project's evaluator (exact Hamming distance,
equal distances by gallery id). Some sample photos are, deep-funneled and cut to 32x32,
gallery faces themselves: the lines "not in the gallery" count only the photos listed in
meta.json as test-split photos, which the gallery cannot hold.

Research-only data (``../shared/data``, never in the repository); skips when absent.

    python bench/lfw_photo_search.py --model /path/to/lfw_run_folder
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
from absl import flags

from common.cli import checks, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")

MODEL = flags.DEFINE_string("model", None, "LFW run folder or export to encode with")
CHECKPOINT = flags.DEFINE_enum("checkpoint", "best_map", ["best_map", "best_loss", "last"],
                               "slot of a run folder")
DATA = flags.DEFINE_string("data", os.path.join(SHARED, "lfw_deepfunneled_32"),
                           "LFW 32x32 pickle folders (train/, test/, meta.json)")
PHOTOS = flags.DEFINE_string("photos", os.path.join(SHARED, "lfw_photos_sample"),
                             "unaligned photos, one folder per person")
DETECTORS = flags.DEFINE_list("detectors", ["mtcnn", "center"], "face preparations to try")
TOP_K = flags.DEFINE_integer("top_k", 10, "hits per query (the wider accuracy)", lower_bound=1,
                             upper_bound=1000)


@dataclass
class Tally:
    """Queries and how many had their person at rank 1 and within the top k."""

    queries: int = 0
    usable: int = 0
    top1: int = 0
    topk: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, truth: int, hit_labels: list[int] | None) -> None:
        self.queries += 1
        if hit_labels is None:
            return
        self.usable += 1
        self.top1 += bool(hit_labels) and hit_labels[0] == truth
        self.topk += truth in hit_labels

    def row(self, name: str) -> str:
        n = max(self.queries, 1)
        return (f"{name:<44} {self.queries:>7} {self.usable:>7} {self.top1 / n:>7.3f} "
                f"{self.topk / n:>7.3f}")


def names_to_labels(data: str) -> dict[str, int] | None:
    """Person name -> gallery label from meta.json's ``identities`` (None when absent)."""
    path = os.path.join(data, "meta.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    return {d["identity"]: int(d["label"]) for d in meta.get("identities", [])}


def test_split_photos(data: str) -> set[str]:
    """``person/file`` of the photos meta.json lists as test-split faces."""
    with open(os.path.join(data, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    return {f"{person}/{os.path.basename(p)}"
            for person, paths in meta.get("test_image_sources", {}).items() for p in paths}


def sample_photos(folder: str) -> list[tuple[str, str]]:
    """(person, photo path) of every photo in ``folder/<person>/``."""
    from face_search.inputs import is_photo

    found = []
    for person in sorted(os.listdir(folder)):
        sub = os.path.join(folder, person)
        if os.path.isdir(sub):
            found += [(person, os.path.join(sub, n)) for n in sorted(os.listdir(sub))
                      if is_photo(n)]
    return found


def search_test_split(searcher, test_dir: str, top_k: int,
                      people: set[int]) -> tuple[Tally, Tally]:
    """(every test face, the test faces of ``people``: the photo sample's labels)."""
    every, theirs = Tally(), Tally()
    for result in searcher.search_paths([test_dir], top_k):
        truth, hit_labels = int(result.identity), [h.label for h in result.hits]
        every.add(truth, hit_labels)
        if truth in people:
            theirs.add(truth, hit_labels)
    return every, theirs


def search_photos(searcher, photos: list[tuple[str, str]], labels: dict[str, int],
                  detector: str, top_k: int, held_out: set[str]) -> tuple[Tally, Tally]:
    """(all photos, the photos not in the gallery) through ``detector``."""
    from common.faces import FacePreparer
    from face_search.inputs import photo_errors

    preparer = FacePreparer(detector)
    every, unseen = Tally(), Tally()
    faces, truths, keys = [], [], []
    for person, path in photos:
        key = f"{person}/{os.path.basename(path)}"
        try:
            faces.append(np.asarray(preparer.prepare_file(path).face))
            truths.append(labels[person])
            keys.append(key)
        except photo_errors() as exc:
            every.add(labels[person], None)
            every.notes.append(f"{key}: {exc}")
            if key in held_out:
                unseen.add(labels[person], None)
    results = searcher.search_faces(np.stack(faces), top_k) if faces else []
    for truth, key, result in zip(truths, keys, results):
        hit_labels = [h.label for h in result.hits]
        every.add(truth, hit_labels)
        if key in held_out:
            unseen.add(truth, hit_labels)
    return every, unseen


def main(argv: list[str]) -> None:
    checks.check_no_arguments(argv)
    train_dir, test_dir = os.path.join(DATA.value, "train"), os.path.join(DATA.value, "test")
    if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
        print(f"skipped: no LFW data at {DATA.value} (research-only, beside the repository)")
        return
    if not MODEL.value:
        runner.fail("--model is required: a run folder or export trained on LFW")
    from face_search import api
    from face_search.encoder import CodeEncoder
    from face_search.searcher import FaceSearcher

    encoder = CodeEncoder.from_path(MODEL.value, CHECKPOINT.value)
    about = encoder.describe()
    print(f"model {MODEL.value}: {about.get('method')}, {encoder.num_bits} bits, "
          f"{about.get('checkpoint')} (epoch {about.get('epoch')})")
    with tempfile.TemporaryDirectory(prefix="lfw-index-") as work:
        start = time.perf_counter()
        built = api.build_index(encoder, [train_dir], os.path.join(work, "index"))
        print(f"gallery {train_dir}: {built.total:,} faces of {built.identities} identities, "
              f"built in {time.perf_counter() - start:.1f} s")
        searcher = FaceSearcher(os.path.join(work, "index"), model=encoder)
        k = TOP_K.value
        print(f"\n{'queries':<44} {'faces':>7} {'usable':>7} {'top-1':>7} {'top-' + str(k):>7}")
        labels = names_to_labels(DATA.value)
        photos = sample_photos(PHOTOS.value) if os.path.isdir(PHOTOS.value) else []
        people = {labels[p] for p, _ in photos if labels and p in labels}
        every, theirs = search_test_split(searcher, test_dir, k, people)
        print(every.row("(a) 32x32 test split"))
        print(theirs.row(f"    of which the photo sample's {len(people)} people"))
        if not photos:
            print(f"(b) skipped: no photos at {PHOTOS.value}")
            return
        unknown = sorted({p for p, _ in photos if not labels or p not in labels})
        if unknown:
            print(f"(b) not mapped to gallery labels (no meta.json identities): {unknown}; "
                  "those photos are left out")
            photos = [(p, path) for p, path in photos if p not in unknown]
        held_out = test_split_photos(DATA.value)
        notes = []
        for detector in DETECTORS.value:
            every, unseen = search_photos(searcher, photos, labels or {}, detector, k, held_out)
            name = "centre crop" if detector == "center" else detector
            print(every.row(f"(b) {len(photos)} photos, {name}"))
            print(unseen.row(f"    of which not in the gallery, {name}"))
            notes += [f"  {detector}: {n}" for n in every.notes]
        counts = searcher.index.identity_counts()
        chance = np.mean([counts.get(str(labels[p]), 0) / built.total for p, _ in photos])
        print(f"\nusable: a face was found (else a miss). A random ranking puts the photo's "
              f"person at rank 1 with probability {chance:.3f} (their share of the gallery)")
        if notes:
            print("photos without a usable face:\n" + "\n".join(notes))


if __name__ == "__main__":
    runner.run_main(main)
