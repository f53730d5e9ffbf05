"""Drive the face search page in a real headless Chromium (tests and the docs screenshot).

Why Selenium with Debian's ``chromium`` and ``chromium-driver``: both come from the same
distribution package set, so the driver always matches the browser, and nothing is
downloaded at run time (this project's machines reach package registries only; Selenium
Manager is never asked because the driver's path is given). :func:`start_chromium`
returns None with the reason when any piece is missing, for tests to skip on.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--force-device-scale-factor=1")


def _first_existing(*paths: str) -> str | None:
    return next((p for p in paths if p and os.path.isfile(p) and os.access(p, os.X_OK)), None)


def start_chromium(profile_dir: str, width: int = 1200,
                   height: int = 900) -> tuple[Any | None, str]:
    """(a Selenium Chrome driver of headless Chromium, "") or (None, why not)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    browser = _first_existing(os.environ.get("CHROMIUM", ""), "/usr/bin/chromium",
                              shutil.which("chromium") or "",
                              shutil.which("chromium-browser") or "")
    driver_path = _first_existing(os.environ.get("CHROMEDRIVER", ""), "/usr/bin/chromedriver",
                                  shutil.which("chromedriver") or "")
    if browser is None or driver_path is None:
        return None, ("no Chromium with its driver here (Debian: apt-get install chromium "
                      "chromium-driver; .ci/run installs them where it may)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, CSP reports
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: no browser here
        return None, f"Chromium did not start: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    driver.set_page_load_timeout(30)
    return driver, ""


def search_with_page(driver: Any, url: str, photo_path: str,
                     timeout: float = 60.0) -> tuple[str, list[dict[str, Any]]]:
    """Open the page, choose ``photo_path`` in its file input, wait for the search to end;
    returns (the final status state, the hit cards as {gallery_id, distance, identity,
    thumbnail_loaded})."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: "faces of" in d.find_element(By.ID, "info").text)
    driver.find_element(By.ID, "photo-input").send_keys(os.path.abspath(photo_path))
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done",
                                                                                  "error"))
    state = driver.find_element(By.ID, "status").get_attribute("data-state")
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#hits img')].every(i => i.complete)"))
    cards = []
    for card in driver.find_elements(By.CSS_SELECTOR, "#hits li"):
        images = card.find_elements(By.TAG_NAME, "img")
        cards.append({"gallery_id": int(card.get_attribute("data-gallery-id")),
                      "distance": int(card.get_attribute("data-distance")),
                      "identity": card.get_attribute("data-identity"),
                      "thumbnail_loaded": bool(images) and driver.execute_script(
                          "return arguments[0].naturalWidth", images[0]) == 32})
    return state, cards


def console_errors(driver: Any) -> list[str]:
    """The page's console errors since the last call (script errors, CSP violations, failed
    loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def full_page_screenshot(driver: Any, path: str) -> str:
    """Save a PNG of the whole page, below the window's bottom edge too (DevTools)."""
    import base64

    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 4000), "scale": 1}})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    return path


def fresh_profile() -> str:
    """A new, empty Chromium profile folder (the caller removes it)."""
    return tempfile.mkdtemp(prefix="chromium-profile-")
