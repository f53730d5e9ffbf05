"""The search page in a real headless Chromium: a photo chosen in its file input or dropped
on it is searched, and the page shows the API's hits, with their gallery faces; refusals
are shown as messages; the API docs page renders under its security policy. Skips when no
Chromium with its driver can be had here."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from search_page_driver import console_errors, fresh_profile, full_page_screenshot, \
    search_with_page, start_chromium
from search_service_fixture import raw_faces, start, synthetic_photo, tiny_index

pytestmark = pytest.mark.slow  # trains models or starts processes


@pytest.fixture(scope="module")
def browser():
    profile = fresh_profile()
    driver, why = start_chromium(profile)
    if driver is None:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"no headless browser: {why}")
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def served():
    root = tiny_index()
    server = start(root, max_upload_bytes=300_000, top_k=6)
    yield root, server
    server.shutdown()
    server.server_close()


def api_hits(server, photo: bytes) -> list[dict]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    connection.request("POST", "/api/search", photo, {"Content-Type": "image/jpeg"})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return [{"gallery_id": h["gallery_id"], "distance": h["distance"],
             "identity": h["identity"]} for h in answer["hits"]]


def test_page_shows_the_hits_the_api_gives(browser, served, tmp_path):
    from selenium.webdriver.common.by import By

    root, server = served
    faces, _ = raw_faces(root / "data" / "test")
    photo = tmp_path / "query face.jpg"
    photo.write_bytes(synthetic_photo(faces[2], size=(240, 160)))
    state, cards = search_with_page(browser, server.url, str(photo))
    assert state == "done", browser.find_element(By.ID, "status").text
    expected = api_hits(server, photo.read_bytes())
    assert len(expected) == 6
    assert [{k: c[k] for k in ("gallery_id", "distance", "identity")} for c in cards] == expected
    assert all(c["thumbnail_loaded"] for c in cards)  # every gallery face is a pickle row
    code = browser.find_element(By.ID, "code").text.replace(" ", "")
    assert len(code) == 12 and set(code) <= {"0", "1"}
    box = browser.find_element(By.ID, "face-box")
    photo_frame = browser.find_element(By.ID, "photo")
    assert box.is_displayed() and photo_frame.size["width"] > 0
    # the centre crop of a 240x160 photo: 80x80 in the middle
    left = (box.location["x"] - photo_frame.location["x"]) / photo_frame.size["width"]
    assert abs(left - 80 / 240) < 0.02 and abs(box.size["width"] / photo_frame.size["width"]
                                               - 80 / 240) < 0.02
    assert console_errors(browser) == []  # no script error, no CSP violation, no failed load
    shot = full_page_screenshot(browser, str(tmp_path / "search_page.png"))
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[1] >= 1000 and image.shape[0] > 600 and image.std() > 10


def test_a_dropped_photo_is_searched_and_refusals_are_shown(browser, served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, server = served
    faces, _ = raw_faces(root / "data" / "test")
    browser.get(server.url)
    WebDriverWait(browser, 30).until(
        lambda d: "faces of" in d.find_element(By.ID, "info").text)

    def drop(data: bytes, name: str, kind: str) -> tuple[str, str]:
        browser.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], arguments[1], {type: arguments[2]}));
            document.getElementById("status").dataset.state = "idle";
            document.getElementById("dropzone").dispatchEvent(new DragEvent("drop",
                {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """, base64.b64encode(data).decode(), name, kind)
        WebDriverWait(browser, 60).until(lambda d: d.find_element(
            By.ID, "status").get_attribute("data-state") in ("done", "error"))
        status = browser.find_element(By.ID, "status")
        return status.get_attribute("data-state"), status.text

    photo = synthetic_photo(faces[5])
    assert drop(photo, "dropped.jpg", "image/jpeg")[0] == "done"
    shown = [int(li.get_attribute("data-gallery-id"))
             for li in browser.find_elements(By.CSS_SELECTOR, "#hits li")]
    assert shown == [h["gallery_id"] for h in api_hits(server, photo)]

    state, text = drop(b"plain text, no picture", "notes.jpg", "image/jpeg")
    assert state == "error" and "not an image" in text
    assert not browser.find_element(By.ID, "results").is_displayed()
    state, text = drop(b"\0" * 400_000, "huge.jpg", "image/jpeg")
    assert state == "error" and "more than the limit of 293 KB" in text


class HoldOne:
    """The served SearchService, except that a search of ``held`` waits for ``release``."""

    def __init__(self, service, held: bytes) -> None:
        self.service, self.held = service, held
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.service, name)

    def search_photo(self, photo, top_k=None):
        if photo == self.held:
            self.entered.set()
            self.release.wait(60)
        return self.service.search_photo(photo, top_k)


COUNT_FINISHED_SEARCHES = """
    window.finishedSearches = 0;
    const fetchOfPage = window.fetch;
    window.fetch = (...args) => fetchOfPage(...args).then((answer) => {
      const json = answer.json.bind(answer);
      answer.json = () => json().finally(() => { window.finishedSearches += 1; });
      return answer;
    }, (error) => { window.finishedSearches += 1; throw error; });
"""


def test_a_late_answer_never_replaces_a_later_search(browser, served):
    """Photo A's search is slow, photo B is dropped meanwhile and answered first: when A's
    answer comes (or is abandoned), the page still shows B's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, server = served
    faces, _ = raw_faces(root / "data" / "test")
    first, second = synthetic_photo(faces[0]), synthetic_photo(faces[10])
    expected = [h["gallery_id"] for h in api_hits(server, second)]
    held = HoldOne(server.service, first)
    server.service = held
    try:
        browser.get(server.url)
        WebDriverWait(browser, 30).until(
            lambda d: "faces of" in d.find_element(By.ID, "info").text)
        browser.execute_script(COUNT_FINISHED_SEARCHES)

        def drop(data: bytes, name: str) -> None:
            browser.execute_script("""
                const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], arguments[1], {type: "image/jpeg"}));
                document.getElementById("dropzone").dispatchEvent(new DragEvent("drop",
                    {dataTransfer: transfer, bubbles: true, cancelable: true}));
            """, base64.b64encode(data).decode(), name)

        drop(first, "first.jpg")
        assert held.entered.wait(30)  # A's search is under way at the server
        drop(second, "second.jpg")
        WebDriverWait(browser, 60).until(lambda d: d.find_element(
            By.ID, "status").get_attribute("data-state") == "done")
        held.release.set()  # A's answer may come now
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return window.finishedSearches") == 2)
        status = browser.find_element(By.ID, "status")
        assert status.get_attribute("data-state") == "done"
        assert status.text.startswith("second.jpg: face found"), status.text
        assert [int(li.get_attribute("data-gallery-id"))
                for li in browser.find_elements(By.CSS_SELECTOR, "#hits li")] == expected
    finally:
        held.release.set()
        server.service = held.service


def test_docs_page_renders_the_api_under_its_policy(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, server = served
    console_errors(browser)  # forget the earlier pages' messages
    browser.get(server.url + "docs")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= 3)
    paths = {e.text.replace("\u200b", "") for e in
             browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/info", "/api/search", "/api/gallery/{gallery_id}/face.png"} <= paths
    assert console_errors(browser) == []  # no script error, no CSP violation, no failed load
