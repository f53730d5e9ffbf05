"""Load test of the face search web service: the server as it was before FastAPI/uvicorn
(the standard library's ThreadingHTTPServer, git commit ``--old_commit``) and today's, on
the same index, one after the other, in one run.

Each server runs as ``python -m face_search serve`` in its own process on 127.0.0.1 (the
old one from ``git archive`` of the old commit in a temporary folder). For each number of
clients, every client (a thread with its own keep-alive connection) POSTs ``--requests``
photos to /api/search, one after the other; a client stops early at ``--level_seconds``.
Reported per server and client count: p50/p99 latency of the searches answered 200, of
the refusals (503 busy), requests per second answered 200, and errors (a reset, a timeout,
any other status). Everything is bounded: request count, a 60 s timeout per request, a
deadline per level; the servers are stopped at the end (SIGTERM, then kill).

    python bench/search_load.py                      # builds a tiny index first (~1 min)
    python bench/search_load.py --index data/synthetic_index --clients 1,8,32 --requests 25
"""

from __future__ import annotations

import collections
import http.client
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import flags

from common.cli import checks, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 60.0
START_TIMEOUT = 300.0

INDEX = flags.DEFINE_string("index", None, "Index to serve (default: a tiny one built first "
                            "from 6 synthetic identities, as the server tests do).")
CLIENTS = flags.DEFINE_list("clients", ["1", "8", "32"], "Concurrent clients, one level each.")
REQUESTS = flags.DEFINE_integer("requests", 25, "Searches per client and level.",
                                lower_bound=1, upper_bound=1000)
LEVEL_SECONDS = flags.DEFINE_float("level_seconds", 180.0, "A level's clients stop sending "
                                   "after this long.", lower_bound=1.0, upper_bound=1800.0)
OLD_COMMIT = flags.DEFINE_string("old_commit", "a4531b4", "Commit of the old server.")
DETECTOR = flags.DEFINE_enum("detector", "center", ["center", "mtcnn"], "Face detector of "
                             "both servers (center: the server's own cost shows; mtcnn: "
                             "~100-200 ms per photo dominates).")
MAX_CONCURRENT = flags.DEFINE_list("max_concurrent_searches", ["8"], "--max_concurrent_searches "
                                   "of the new server; several: one run of it for each.")
PHOTO_SIZE = flags.DEFINE_list("photo_size", ["480", "320"], "Width,height of the photos.")


def old_checkout(commit: str, folder: str) -> str:
    """The repository at ``commit`` (its tracked files) extracted into ``folder``."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit], capture_output=True,
                             check=True, timeout=120)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True, timeout=120)
    return folder


def start_server(code_root: str, index: str, detector: str,
                 *args: str) -> tuple[subprocess.Popen, int]:
    """``python -m face_search serve`` of the code in ``code_root`` (more flags: ``args``);
    (process, its port)."""
    env = dict(os.environ, PYTHONPATH=code_root, TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS="1")  # the same for both servers (faiss on a shared machine)
    process = subprocess.Popen([sys.executable, "-m", "face_search", "serve", "--index", index,
                                "--port", "0", "--host", HOST, "--detector", detector, *args],
                               cwd=code_root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        stop_server(process)
        raise TimeoutError(f"the server in {code_root} did not start in {START_TIMEOUT:g} "
                           "s") from None
    marker = f"at http://{HOST}:"
    if marker not in line:
        stop_server(process)
        raise RuntimeError(f"the server in {code_root} did not start: {line!r}")
    return process, int(line.split(marker, 1)[1].split("/", 1)[0])


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(port: int, photos: list[bytes], count: int, deadline: float,
           results: list[tuple[str, float]]) -> None:
    """``count`` searches on one keep-alive connection (a new one after an error); each
    result: (outcome: "200", "503", another status or an error name, seconds)."""
    connection = None
    for i in range(count):
        if time.monotonic() > deadline:
            return
        if connection is None:
            connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
        began = time.perf_counter()
        try:
            connection.request("POST", "/api/search", photos[i % len(photos)],
                               {"Content-Type": "image/jpeg"})
            answer = connection.getresponse()
            answer.read()
            outcome = str(answer.status)
            if answer.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as exc:
            outcome = type(exc).__name__
            connection.close()
            connection = None
        results.append((outcome, time.perf_counter() - began))
    if connection is not None:
        connection.close()


def level(port: int, photos: list[bytes], clients: int, count: int,
          seconds: float) -> dict[str, float | int | str]:
    """One load level: ``clients`` clients of ``count`` searches each, at once."""
    results: list[tuple[str, float]] = []
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(port, photos, count, deadline, results))
               for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT + 10)
    wall = time.perf_counter() - began
    ok = np.array([s for o, s in results if o == "200"]) * 1000
    busy = np.array([s for o, s in results if o == "503"]) * 1000

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if len(values) else float("nan")

    errors = collections.Counter(o for o, _ in results if o not in ("200", "503"))
    return {"clients": clients, "sent": len(results), "ok": len(ok), "busy": len(busy),
            "errors": ", ".join(f"{n} {kind}" for kind, n in errors.most_common()) or "0",
            "p50": pct(ok, 50),
            "p99": pct(ok, 99), "busy_p50": pct(busy, 50), "rps": len(ok) / wall,
            "wall": wall}


def tiny_index() -> str:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from search_service_fixture import tiny_index as build
    return str(build() / "index")


def photos_for(size: tuple[int, int], count: int = 16) -> list[bytes]:
    """JPEG "photos" of synthetic faces (the centre-crop detector finds them)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from search_service_fixture import synthetic_photo

    from common.data.preprocess import to_nhwc
    from common.synthetic import generate_identity_dataset
    _, _, rows, _ = generate_identity_dataset(count, 1, 1, seed=7)
    faces = np.clip(np.rint(to_nhwc(rows)), 0, 255).astype(np.uint8)
    return [synthetic_photo(face, size) for face in faces]


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| server | clients | requests | 200 | 503 | errors | p50 / p99 ms (200) | "
             "p50 ms (503) | searches/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        busy = "-" if np.isnan(r["busy_p50"]) else f"{r['busy_p50']:.1f}"
        lines.append(f"| {name} | {r['clients']} | {r['sent']} | {r['ok']} | {r['busy']} | "
                     f"{r['errors']} | {r['p50']:.0f} / {r['p99']:.0f} | {busy} | "
                     f"{r['rps']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    checks.check_no_arguments(argv)
    clients = [int(c) for c in CLIENTS.value]
    width, height = (int(v) for v in PHOTO_SIZE.value)
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs ({platform.processor() or '?'}), "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    index = os.path.abspath(INDEX.value) if INDEX.value else tiny_index()
    photos = photos_for((width, height))
    rows = []
    with tempfile.TemporaryDirectory(prefix="search-load-old-") as old:
        servers = [(f"old ({OLD_COMMIT.value}, ThreadingHTTPServer)",
                    old_checkout(OLD_COMMIT.value, old), [])]
        servers += [(f"new (FastAPI + uvicorn), {n} at once", ROOT,
                     ["--max_concurrent_searches", n]) for n in MAX_CONCURRENT.value]
        for name, code_root, args in servers:
            process, port = start_server(code_root, index, DETECTOR.value, *args)
            try:
                level(port, photos, 1, 3, 60)  # warm-up: the first searches load everything
                for n in clients:
                    row = level(port, photos, n, REQUESTS.value, LEVEL_SECONDS.value)
                    rows.append((name, row))
                    print(table([(name, row)]).splitlines()[-1], flush=True)
            finally:
                stop_server(process)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}; {len(photos)} photos "
          f"{width}x{height}, detector {DETECTOR.value}, {REQUESTS.value} requests per client\n")
    print(table(rows))


if __name__ == "__main__":
    runner.run_main(main)
