"""Benchmark: the memory one photo decode takes (``common.faces.read_image``), per pixel.

Why: the search service sizes how many searches run at once by what one decode holds
(``face_search.service.search_gate``; README "Face search", docs/BENCHMARKS.md). Each
case is decoded in a fresh process, which reports the growth of its peak resident size
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the decode) over its
size before: Pillow's own buffers included, which tracemalloc does not see. Synthetic
photos, written once into ``--folder``:

* a 12 MP and a 50 MP JPEG (quality 90), and the 50 MP one with an EXIF rotation;
* a 50 MP RGBA PNG (composited over black);
* a 50 MP 16-bit grey PNG (a small file: the memory is in the pixels, not the bytes).

    python bench/decode_memory.py [--folder /tmp/decode_memory]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURE = """
import sys
from common.faces import read_image
data = open(sys.argv[1], "rb").read()
def kb(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith(key))
before = kb("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size
image = read_image(data)
grown = (kb("VmHWM:") - before) * 1024
print(image.shape[1], image.shape[0], grown)
"""


def _rgb(height: int, width: int) -> np.ndarray:
    y = np.arange(height, dtype=np.uint16)[:, None]
    x = np.arange(width, dtype=np.uint16)[None, :]
    out = np.empty((height, width, 3), np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = (x // 8) % 256, (y // 8) % 256, ((x + y) // 16) % 256
    return out


def _write_cases(folder: str) -> list[str]:
    """The case files (written if absent); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # EXIF orientation: turned 90 degrees
    grey = (np.add.outer(np.arange(7070, dtype=np.uint32) * 4,
                         np.arange(7070, dtype=np.uint32) * 5) % 65536).astype(np.uint16)
    cases = {
        "jpeg_12mp.jpg": (lambda: Image.fromarray(_rgb(3000, 4000)), {"quality": 90}),
        "jpeg_50mp.jpg": (lambda: Image.fromarray(_rgb(6120, 8160)), {"quality": 90}),
        "jpeg_50mp_exif_rotated.jpg": (lambda: Image.fromarray(_rgb(6120, 8160)),
                                       {"quality": 90, "exif": rotated}),
        "rgba_50mp.png": (lambda: Image.fromarray(np.dstack(
            [_rgb(6120, 8160), np.full((6120, 8160), 200, np.uint8)]), "RGBA"), {}),
        "grey16_50mp.png": (lambda: Image.fromarray(grey), {}),
    }
    paths = []
    for name, (make, options) in cases.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            make().save(path, **options)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="/tmp/decode_memory",
                        help="where the synthetic photos are written (kept for re-runs)")
    args = parser.parse_args()
    if not os.access("/proc/self/clear_refs", os.W_OK):
        sys.exit("error: needs Linux's /proc/self/clear_refs to measure a peak resident size")
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"Pillow {Image.__version__}, numpy {np.__version__}")
    print(f"{'photo':28s} {'size':>12s} {'MP':>5s} {'file KB':>9s} {'peak growth MiB':>16s} "
          f"{'B/pixel':>8s}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    for path in _write_cases(args.folder):
        done = subprocess.run([sys.executable, "-c", MEASURE, path], capture_output=True,
                              text=True, cwd=ROOT, env=env, check=True)
        width, height, grown = (int(v) for v in done.stdout.split())
        pixels = width * height
        print(f"{os.path.basename(path):28s} {f'{width}x{height}':>12s} {pixels / 1e6:5.1f} "
              f"{os.path.getsize(path) / 1e3:9,.0f} {grown / 2**20:16,.0f} "
              f"{grown / pixels:8.1f}")


if __name__ == "__main__":
    main()
