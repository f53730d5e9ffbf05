"""Benchmark: retrieval_metrics at the YouTube Faces protocol size, and the original's speed.

Prints the wall time and peak memory of one ``retrieval_metrics`` call per mode at
7,975 queries x 63,800 database items (48 bits, 1,595 identities: 5 queries and 40
database items each), then times a plain numpy transcription of the original
``RetrievalTest.search`` evaluation (``compactbit`` + look-up-table Hamming +
``evaluate_macro`` + ``argsort`` + per-item ``cat_apcal`` loop) on a subset of the
queries where it finishes, and the speed ratio on that same subset.

    python bench/metrics.py [--original_queries 100] [--bits 48]
"""

from __future__ import annotations

import os
import platform
import resource
import time
import tracemalloc

import numpy as np
from absl import app, flags

from common.metrics import retrieval_metrics

flags.DEFINE_integer("identities", 1595, "identities (YouTube Faces: 1595)")
flags.DEFINE_integer("db_per_identity", 40, "database items per identity")
flags.DEFINE_integer("queries_per_identity", 5, "queries per identity")
flags.DEFINE_integer("bits", 48, "code length")
flags.DEFINE_float("noise", 1.2,
                   "code noise around each identity's centre (more noise, fewer ties)")
flags.DEFINE_integer("original_queries", 100, "queries for the original transcription (0 skips it)")
flags.DEFINE_integer("seed", 0, "random seed")
flags.DEFINE_list("engines", ["numba", "numpy"], "retrieval_metrics engines to time")
FLAGS = flags.FLAGS


def make_codes(rng):
    """Real-valued codes clustered by identity, like a trained hashing network's."""
    centers = rng.normal(size=(FLAGS.identities, FLAGS.bits))
    db_y = np.repeat(np.arange(FLAGS.identities), FLAGS.db_per_identity)
    q_y = np.repeat(np.arange(FLAGS.identities), FLAGS.queries_per_identity)
    db = centers[db_y] + FLAGS.noise * rng.normal(size=(len(db_y), FLAGS.bits))
    q = centers[q_y] + FLAGS.noise * rng.normal(size=(len(q_y), FLAGS.bits))
    return q.astype(np.float32), q_y, db.astype(np.float32), db_y


def measure(fn):
    """(result, seconds, peak MiB of numpy/Python allocations during the call).

    tracemalloc sees numpy's buffers, not numba's small per-query scratch arrays; the
    process peak RSS printed after the runs bounds everything.
    """
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak / 2 ** 20


# ---- plain numpy transcription of the original evaluation (for the speed ratio) ----
_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def _original_compactbit(b):
    n, nbits = b.shape
    nwords = int(np.ceil(nbits / 8))
    cb = np.zeros((n, nwords), dtype=np.uint8)
    for i in range(n):
        for j in range(nwords):
            part = b[i, j * 8:(j + 1) * 8]
            value = 0
            for k in range(len(part)):
                value = value + (2 ** k) * part[k]
            cb[i, j] = np.uint8(int(value) % 256)
    return cb


def original_search(q_codes, q_y, db_codes, db_y, top_k=50, radius=2):
    gallery = np.sign(db_codes)
    gallery[gallery == 0] = 1
    query = np.sign(q_codes)
    query[query == 0] = 1
    relevant = db_y[:, None] == q_y[None, :]
    b, tb = _original_compactbit(gallery), _original_compactbit(query)
    dist = np.zeros((len(tb), len(b)), dtype=np.uint16)
    for i in range(len(tb)):
        for j in range(b.shape[1]):
            dist[i] += _LUT[tb[i, j] ^ b[:, j]]
    dist = dist.T
    retrieved = dist <= radius + 1e-6
    both = (relevant & retrieved).sum(0)
    n_ret, n_rel = retrieved.sum(0), relevant.sum(0)
    precision = np.where(n_ret > 0, both / np.maximum(n_ret, 1), 0).mean()
    recall = np.where(n_rel > 0, both / np.maximum(n_rel, 1), 0).mean()
    ranking = np.argsort(dist, axis=0)
    aps, p_top = [], []
    for i in range(ranking.shape[1]):
        x, p = 0, 0.0
        rel = relevant[:, i]
        for j in range(ranking.shape[0]):
            if rel[ranking[j, i]]:
                x += 1
                p += x / (j + 1)
        aps.append(p / x if x else 0.0)
        p_top.append(sum(rel[ranking[jj, i]] for jj in range(top_k)) / top_k)
    return {"map": float(np.mean(aps)), "precision_at_k": float(np.mean(p_top)),
            "precision_within_radius": float(precision), "recall_within_radius": float(recall)}


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    q, q_y, db, db_y = make_codes(rng)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"python {platform.python_version()}")
    print(f"size: {len(q)} queries x {len(db)} database items, {FLAGS.bits} bits")
    _, s, _ = measure(lambda: retrieval_metrics(q[:2], q_y[:2], db[:100], db_y[:100],
                                                engine="numba"))
    print(f"first numba call (compiles the kernel, or loads it from numba's cache): {s:.2f} s")
    for engine in FLAGS.engines:
        for hamming, ties in [("exact", "index"), ("exact", "expected"), ("legacy", "index")]:
            def run(hamming=hamming, ties=ties, engine=engine):
                return retrieval_metrics(q, q_y, db, db_y, hamming=hamming, ties=ties,
                                         engine=engine)
            r, s, peak = measure(run)
            print(f"retrieval_metrics engine={engine:5s} hamming={hamming:6s} ties={ties:8s}: "
                  f"{s:6.2f} s, peak {peak:6.1f} MiB | "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))
    print(f"process peak RSS so far (codes, labels, numba runtime included): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if FLAGS.original_queries:
        sub = slice(0, FLAGS.original_queries)
        orig, s_orig, _ = measure(lambda: original_search(q[sub], q_y[sub], db, db_y))
        ours, s_ours, _ = measure(lambda: retrieval_metrics(q[sub], q_y[sub], db, db_y,
                                                            hamming="legacy"))
        print(f"original transcription, {FLAGS.original_queries} queries x {len(db)}: "
              f"{s_orig:.2f} s "
              f"(~{s_orig / FLAGS.original_queries * len(q) / 60:.1f} min at {len(q)} queries); "
              f"retrieval_metrics(legacy) on the same subset: {s_ours:.3f} s; "
              f"speed ratio {s_orig / s_ours:.0f}x")
        print("  original: " + ", ".join(f"{k} {v:.4f}" for k, v in orig.items()))
        print("  ours    : " + ", ".join(f"{k} {v:.4f}" for k, v in ours.items()))


if __name__ == "__main__":
    app.run(main)
