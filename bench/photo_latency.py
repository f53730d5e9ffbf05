"""Benchmark: the latency of one photo query, end to end, split into its stages, on this CPU.

A query goes photo -> face -> code -> hits through the project's own API, one photo at a
time as a service answers it; every stage is timed on its own:

1. read + decode: the file's bytes read and decoded (``common.faces.read_image``);
2. detect + align: ``FacePreparer("mtcnn").prepare`` (MTCNN, the crop turned to level the
   eyes, shrunk to 32x32) and, for comparison, ``FacePreparer("center")`` (no detector);
3. encode: ``CodeEncoder.encode_faces`` on the one face, with the index's model (an export);
4. search, top ``--k``: the index of ``--index`` as built (exact flat scan; 4,000 faces for
   the main job's synthetic index), and a ``GalleryIndex`` of ``--gallery_size`` random
   48-bit codes clustered by identity as in ``bench/search.py`` (its ``make_codes`` and the
   flags that shape its codes), once ``kind="exact"``, once ``kind="mih"``. On the clustered
   gallery the query is one of its clustered queries (an identity's centre with
   ``--query_flip`` of the bits flipped, as a face of a gallery person lies): the photo's own
   code belongs to no identity of that gallery, and ``mih`` is timed with it too (a query
   near no cluster: no identity's face close, more candidates to probe).

Totals add a query's stages (mtcnn path); ``FaceSearcher.search_photo`` is also timed as one
call on the index of ``--index`` to check the sum. Photos: the LFW sample photos of
``--photos`` (research-only, beside the repository; skipped when absent) and a synthetic
photo (a synthetic test face enlarged on a plain gradient, ``--photo_width`` x
``--photo_height``, JPEG, the same bytes every query). Each set: one first query (reported
apart: the warm-up costs), ``--warmup`` more untimed, then at least ``--min_queries`` timed
(every photo of the set once, cycled up to that count). Printed: median and p90 per stage,
the one-time start-up costs (Python and imports, TensorFlow, the index, the model, MTCNN,
the first query), the machine and its load average.

    python bench/photo_latency.py [--photos DIR] [--gallery_size 1000000] [--min_queries 30]
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
from absl import app, flags

import search as clustered  # bench/search.py: make_codes and the flags --bits, --k, --seed, ...
from common.cli import checks, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")

flags.DEFINE_string("index", os.path.join(ROOT, "data", "synthetic_index"),
                    "index folder (python -m face_search build ...); its model encodes")
flags.DEFINE_string("photos", os.path.join(SHARED, "lfw_photos_sample"),
                    "photos, one folder per person (skipped when absent)")
flags.DEFINE_string("faces", os.path.join(ROOT, "data", "synthetic", "test"),
                    "pickle folder whose first face makes the synthetic photo")
flags.DEFINE_integer("photo_width", 480, "synthetic photo width", lower_bound=64)
flags.DEFINE_integer("photo_height", 320, "synthetic photo height", lower_bound=64)
flags.DEFINE_integer("gallery_size", 1_000_000, "clustered random codes (0: none)",
                     lower_bound=0)
flags.DEFINE_integer("min_queries", 30, "timed queries per photo set, at least", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "untimed queries per set after its first", lower_bound=0)
flags.DEFINE_integer("faiss_threads", 1, "faiss threads (1: the advice for shared machines)",
                     lower_bound=1)
FLAGS = flags.FLAGS

MTCNN, CENTER, ENCODE, READ = "detect + align: mtcnn", "detect + align: centre crop", \
    "encode (export, 1 face)", "read + decode"


def since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc), or None."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def photo_sets() -> list[tuple[str, list[bytes]]]:
    """(name, photo file bytes) of each photo set: the sample photos when present, and the
    synthetic photo."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from search_service_fixture import raw_faces, synthetic_photo

    from face_search.inputs import is_photo

    sets = []
    folder = FLAGS.photos
    paths = sorted(os.path.join(folder, person, name)
                   for person in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if os.path.isdir(os.path.join(folder, person))
                   for name in os.listdir(os.path.join(folder, person)) if is_photo(name))
    if paths:
        from PIL import Image
        sizes = sorted({Image.open(p).size for p in paths})
        size = " / ".join(f"{w}x{h}" for w, h in sizes)
        sets.append((f"{len(paths)} LFW photos {size}", [open(p, "rb").read() for p in paths]))
    else:
        print(f"LFW photos: skipped, none at {folder} (research-only, beside the repository)")
    faces, _ = raw_faces(FLAGS.faces)
    photo = synthetic_photo(faces[0], (FLAGS.photo_width, FLAGS.photo_height))
    sets.append((f"synthetic {FLAGS.photo_width}x{FLAGS.photo_height}", [photo]))
    return sets


def start_up(log: dict[str, float]):
    """TensorFlow, the index, its model, MTCNN: loaded once, each timed into ``log``."""
    ready = since_process_start()
    if ready is not None:
        log["Python and imports before main (numpy, faiss, numba, face_search)"] = ready
    _, log["import TensorFlow"] = timed(__import__, "tensorflow")
    from common.faces import FacePreparer
    from face_search import CodeEncoder, FaceSearcher, GalleryIndex
    from face_search.encoder import encoder_for_index

    index, seconds = timed(GalleryIndex.load, FLAGS.index)
    log[f"load the index ({len(index):,} faces, kind {index.kind})"] = seconds
    encoder, seconds = timed(CodeEncoder.from_path, index.model["path"])
    log["load the model (SavedModel export)"] = seconds
    _, seconds = timed(encoder_for_index, index, encoder, FLAGS.index)
    log["check it is the index's model (first encode: 32 probe faces)"] = seconds
    mtcnn, log["load MTCNN (FacePreparer('mtcnn'))"] = timed(FacePreparer, "mtcnn")
    center = FacePreparer("center")
    searcher = FaceSearcher(index, model=encoder, preparer=mtcnn)
    return searcher, mtcnn, center


def clustered_galleries(num_bits: int):
    """{kind: GalleryIndex} of ``--gallery_size`` clustered codes, and their queries."""
    from face_search import GalleryIndex

    if not FLAGS.gallery_size:
        return {}, None
    if FLAGS.bits != num_bits:
        runner.fail(f"--bits {FLAGS.bits}: the model makes {num_bits}-bit codes")
    start = time.perf_counter()
    packed, queries = clustered.make_codes(FLAGS.gallery_size, np.random.default_rng(FLAGS.seed))
    n = len(packed)
    galleries = {}
    for kind in ("exact", "mih"):
        galleries[kind] = GalleryIndex.create(num_bits, kind)
        galleries[kind].add_columns(packed, [""] * n, np.zeros(n, np.int64), [""] * n)
    print(f"clustered gallery: {n:,} codes of {num_bits} bits, {n // FLAGS.per_identity:,} "
          f"identities, exact and mih, built in {time.perf_counter() - start:.1f} s "
          "(bench set-up, not a query cost)")
    return galleries, queries


def one_query(photo: bytes, number: int, searcher, mtcnn, center, galleries,
              queries) -> dict[str, float]:
    """Seconds of each stage of one query (and the totals)."""
    from common.faces import read_image
    from face_search.inputs import photo_errors

    out = {}
    image, out[READ] = timed(read_image, photo)
    centre_face, out[CENTER] = timed(center.prepare, image)
    start = time.perf_counter()
    try:
        face = mtcnn.prepare(image).face
    except photo_errors():  # no face: the centre crop is encoded instead
        out["mtcnn found no face"] = 1.0
        face = centre_face.face
    out[MTCNN] = time.perf_counter() - start
    code, out[ENCODE] = timed(searcher.encoder.encode_faces, np.asarray(face)[None])
    k = FLAGS.k
    search_own = f"search: {len(searcher.index):,}-face index ({searcher.index.kind})"
    _, out[search_own] = timed(searcher.index.search, code, k)
    front = out[READ] + out[MTCNN] + out[ENCODE]
    out[f"total (mtcnn): {len(searcher.index):,}-face index"] = front + out[search_own]
    if galleries:
        size = f"{len(galleries['exact']) / 1e6:g}M"
        near = queries[number % len(queries)][None]
        for kind in ("exact", "mih"):
            _, out[f"search: {size} clustered ({kind})"] = timed(galleries[kind].search, near, k)
        _, out[f"search: {size} clustered (mih), the photo's own code"] = timed(
            galleries["mih"].search, code, k)
        for kind in ("exact", "mih"):
            out[f"total (mtcnn): {size} clustered ({kind})"] = front + \
                out[f"search: {size} clustered ({kind})"]
        out[f"total (centre crop): {size} clustered (mih)"] = out[READ] + out[CENTER] + \
            out[ENCODE] + out[f"search: {size} clustered (mih)"]
    _, out["one call: FaceSearcher.search_photo (mtcnn)"] = timed(searcher.search_photo, photo,
                                                                  k)
    return out


def run_set(photos: list[bytes], *args) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The first query's stage times, and every timed query's."""
    first = one_query(photos[0], 0, *args)
    for number in range(1, 1 + FLAGS.warmup):
        one_query(photos[number % len(photos)], number, *args)
    count = max(FLAGS.min_queries, len(photos))
    times: dict[str, list[float]] = {}
    for number in range(count):
        for stage, seconds in one_query(photos[number % len(photos)], number, *args).items():
            times.setdefault(stage, []).append(seconds)
    return first, times


def report(sets: list[tuple[str, int, dict, dict]]) -> None:
    """One markdown table: median / p90 (first query) per stage, one column per photo set."""
    head = " | ".join(f"{name} ({count} queries)" for name, count, _, _ in sets)
    print(f"\n| ms: median / p90 (first query) | {head} |")
    print("|---" * (1 + len(sets)) + "|")
    stages = [s for s in sets[0][3] if s != "mtcnn found no face"]
    order = (READ, MTCNN, CENTER, ENCODE, "search", "total", "one call")
    for stage in sorted(stages, key=lambda s: next(i for i, o in enumerate(order)
                                                   if s.startswith(o))):
        cells = []
        for _, _, first, times in sets:
            ms = np.array(times.get(stage, [np.nan])) * 1e3
            cells.append(f"{np.median(ms):.1f} / {np.percentile(ms, 90):.1f} "
                         f"({first.get(stage, np.nan) * 1e3:.0f})")
        print(f"| {stage} | {' | '.join(cells)} |")
    for name, count, _, times in sets:
        missed = len(times.get("mtcnn found no face", []))
        if missed:
            print(f"{name}: mtcnn found no face in {missed} of {count} queries (encoded: the "
                  "centre crop; search_photo answered 'no face')")


def report_start_up(log: dict[str, float], first_set: tuple[str, int, dict, dict]) -> None:
    """The one-time costs, with the first query of the first set (the 4,000-face path)."""
    name, _, first, _ = first_set
    own = next(s for s in first if s.startswith("search: ") and "clustered" not in s)
    log[f"first query ({name}): read, mtcnn, encode, search"] = \
        first[READ] + first[MTCNN] + first[ENCODE] + first[own]
    print("\n| one-time start-up | s |\n|---|---|")
    for stage, seconds in log.items():
        print(f"| {stage} | {seconds:.2f} |")
    print(f"| **process start to the first answer** | **{sum(log.values()):.1f}** |")


def main(argv: list[str]) -> None:
    checks.check_no_arguments(argv)
    if not os.path.isfile(os.path.join(FLAGS.index, "index.json")):
        runner.fail(f"no index at {FLAGS.index}: python -m face_search build --model "
                   "exports/dcbh_synthetic --gallery data/synthetic/train --index "
                   "data/synthetic_index")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    log: dict[str, float] = {}
    searcher, mtcnn, center = start_up(log)
    clustered.set_threads(FLAGS.faiss_threads)
    import tensorflow as tf
    print(f"TensorFlow {tf.__version__}, index {FLAGS.index}, model "
          f"{searcher.encoder.path} ({searcher.encoder.num_bits} bits), top {FLAGS.k}, "
          f"faiss threads {FLAGS.faiss_threads}")
    galleries, queries = clustered_galleries(searcher.encoder.num_bits)
    args = (searcher, mtcnn, center, galleries, queries)
    results = []
    for name, photos in photo_sets():
        first, times = run_set(photos, *args)
        results.append((name, len(next(iter(times.values()))), first, times))
        print(f"{name}: done, load average {os.getloadavg()[0]:.1f}")
    report(results)
    report_start_up(log, results[0])
    print(f"\nload average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    app.run(main)
