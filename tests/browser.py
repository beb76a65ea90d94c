"""Headless Debian ``chromium`` driven by Selenium through its own ``chromedriver`` (the Debian
package of the same version: nothing is downloaded), for tests of pages people look at."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_chromium() -> None:
    """A test that asks for the browser fails with the way to get it, rather than skipping: CI
    installs it (``scripts/chromium.sh``, run by ``make test-long``)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        raise AssertionError(
            f"{', '.join(missing)} not installed: run scripts/chromium.sh (apt-get install "
            "chromium chromium-driver, as root)"
        )


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000):
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def platform_fonts(driver, selector: str) -> list[dict]:
    """The fonts Chromium really drew an element's text with (DevTools' CSS domain): family,
    whether it is a web font, and how many glyphs each drew. A fallback font that lacks the
    characters shows up here as the system font that drew empty boxes."""
    document = driver.execute_cdp_cmd("DOM.getDocument", {"depth": 0})
    node = driver.execute_cdp_cmd(
        "DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": selector}
    )
    driver.execute_cdp_cmd("CSS.enable", {})
    fonts = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
    return fonts["fonts"]
