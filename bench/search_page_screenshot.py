"""Screenshot of the face search page after a search, for the README (docs/images/).

Serves ``--index`` on a free localhost port, makes a "photo" of one synthetic face
(enlarged in the middle of a plain gradient: the centre-crop detector finds it again),
uploads it through the page in headless Chromium (tests/search_page_driver.py) and saves
the whole page as a PNG. Synthetic faces only: the research-only photos under
``../shared`` may never appear in a committed figure, so galleries and faces from there
are refused.

    ./run.sh                     # once: trains and exports the synthetic model
    python -m face_search build --model exports/dcbh_synthetic \\
        --gallery data/synthetic/train --index data/synthetic_index
    python bench/search_page_screenshot.py      # writes docs/images/search_page.png
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from absl import flags

from common.cli import checks, runner
from common.cli.runner import fail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESEARCH_ONLY = os.path.join(ROOT, "..", "shared")

INDEX = flags.DEFINE_string("index", "data/synthetic_index", "index folder to serve")
FACES = flags.DEFINE_string("faces", "data/synthetic/test", "pickle folder of the query face")
ROW = flags.DEFINE_integer("row", 16, "row of --faces to search with", lower_bound=0)
OUT = flags.DEFINE_string("out", "docs/images/search_page.png", "PNG to write")
TOP_K = flags.DEFINE_integer("top_k", 10, "hits shown", lower_bound=1, upper_bound=100)
WIDTH = flags.DEFINE_integer("width", 1200, "browser window width, pixels", lower_bound=400,
                             upper_bound=4000)


def research_only(path: str) -> bool:
    """Whether ``path`` lies in the research-only data folder beside the repository."""
    shared = os.path.realpath(RESEARCH_ONLY)
    return os.path.commonpath([os.path.realpath(path), shared]) == shared


def screenshot(index_dir: str, faces_dir: str, row: int, out: str, top_k: int,
               width: int) -> list[dict]:
    """Search with face ``row`` of ``faces_dir`` on the page; save the page; the hits."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from search_page_driver import full_page_screenshot, search_with_page, start_chromium
    from search_service_fixture import raw_faces, synthetic_photo

    from common.faces import FacePreparer
    from face_search.searcher import FaceSearcher
    from face_search.service.server import make_server, serve_in_thread
    from face_search.service.web_api import SearchService

    faces, _ = raw_faces(faces_dir)
    if not 0 <= row < len(faces):
        raise ValueError(f"--row {row}: {faces_dir} holds {len(faces)} faces")
    searcher = FaceSearcher(index_dir)
    if len(searcher.index) and research_only(searcher.index.item(
            int(searcher.index.ids[0])).source):
        raise ValueError(f"{index_dir}: its gallery is research-only data; use synthetic faces")
    server = make_server(SearchService(searcher, top_k, preparer=FacePreparer("center")),
                         "127.0.0.1", 0, quiet=True)
    serve_in_thread(server)
    work = tempfile.mkdtemp(prefix="search-page-")
    driver, why = start_chromium(os.path.join(work, "profile"), width=width, height=900)
    try:
        if driver is None:
            raise OSError(f"no headless browser: {why}")
        photo = os.path.join(work, "synthetic_face.jpg")
        with open(photo, "wb") as f:
            f.write(synthetic_photo(faces[row], size=(480, 320)))
        state, cards = search_with_page(driver, server.url, photo)
        if state != "done":
            raise ValueError(f"the page did not search: {driver.find_element('id', 'status').text}")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        full_page_screenshot(driver, out)
        return cards
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> None:
    checks.check_no_arguments(argv)
    for name, path in (("index", INDEX.value), ("faces", FACES.value)):
        if research_only(path):
            fail(f"--{name} {path}: research-only data may not appear in a committed figure")
    checks.check_file_flag("out", OUT.value)
    cards = screenshot(INDEX.value, FACES.value, ROW.value, OUT.value, TOP_K.value, WIDTH.value)
    print(f"wrote {OUT.value}: {len(cards)} hits, identities "
          f"{sorted({c['identity'] for c in cards})}, distances {[c['distance'] for c in cards]}")


if __name__ == "__main__":
    runner.run_main(main)
