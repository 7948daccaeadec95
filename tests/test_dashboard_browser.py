"""The served dashboard in a real headless Chromium (Debian's), driven by Playwright.

`opensky-lakehouse dashboard` serves the app on a free 127.0.0.1 port over the known gold
fixture; the browser loads it, moves the history slider, finds no error on the page and saves
a screenshot. The server is stopped at the end.
"""

from __future__ import annotations

import os

import pytest

from bench.browser import CHROMIUM, kpi, launch, load_page, served, slider_key, wait_for_version
from lakehouse.net import free_port
from lakehouse.settings import load_settings
from tests import gold_fixture as gold

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def test_served_app_loads_moves_with_the_slider_and_shows_no_error(tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings = load_settings(profile="test", env={}, dotenv=None).replace(
        storage={"root": str(tmp_path / "lake")}, dashboard={"refresh_s": 30.0},
    )
    gold.build_gold(settings)
    with served(settings, free_port()) as url, playwright_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1250})
            _, version = load_page(page, url)
            assert version == gold.LATEST
            assert kpi(page, "Live aircraft") == str(gold.EXPECTED[gold.LATEST]["live"])

            slider_key(page, "Home")  # the oldest version: the empty table
            wait_for_version(page, 0)
            assert kpi(page, "Live aircraft") == "0"
            slider_key(page, "ArrowRight")
            wait_for_version(page, 1)
            assert kpi(page, "Live aircraft") == str(gold.EXPECTED[1]["live"])
            assert kpi(page, "Airborne") == str(gold.EXPECTED[1]["airborne"])
            page.get_by_text("Viewing history").first.wait_for()

            page.locator(".st-key-go_live button").click()
            wait_for_version(page, gold.LATEST)
            page.wait_for_timeout(1000)  # let the map and charts draw before the picture
            assert page.locator("[data-testid=stException]").count() == 0
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000
        finally:
            browser.close()
