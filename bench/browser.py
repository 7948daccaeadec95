"""Serve the dashboard and drive it with a real headless Chromium: load time, slider response.

    python -m bench.browser [--port N] [--moves 10] [--screenshot docs/dashboard.png]

Settings come from conf/ and the environment, as for ``opensky-lakehouse dashboard``. Needs
Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` package (never its own browser
download). Prints one JSON line: page load seconds (navigation until the page says which
version it shows) and, per slider step, seconds until the page shows the new version.
The browser test uses the same helpers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from dashboard.server import PROJECT, environment

CHROMIUM = "/usr/bin/chromium"
SHOWN = "Shown: gold.live_flights version"


def wait_serving(url: str, timeout_s: float, server: subprocess.Popen | None = None) -> None:
    """Wait until the Streamlit server at ``url`` answers its health check; TimeoutError after
    ``timeout_s``, RuntimeError (with its output) if ``server`` exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"dashboard exited {server.returncode}:\n{server.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"dashboard not serving on {url} after {timeout_s:.0f} s")
        time.sleep(0.25)


@contextmanager
def served(settings, port: int, timeout_s: float = 90.0):
    """Run ``opensky-lakehouse dashboard`` on 127.0.0.1:port until the block ends; yield the URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "lakehouse", "dashboard", "--port", str(port)],
        cwd=PROJECT, env=environment(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, timeout_s, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def shown_version(page, timeout_ms: float = 60_000) -> int:
    """Wait until the page says which version it shows; return that version."""
    footer = page.get_by_text(SHOWN)
    footer.wait_for(timeout=timeout_ms)
    return int(footer.inner_text().split(SHOWN, 1)[1].split("·", 1)[0])


def wait_for_version(page, version: int, timeout_ms: float = 60_000) -> float:
    """Wait until the page shows ``version``; return the server's build time for it (ms)."""
    footer = page.get_by_text(f"{SHOWN} {version} ·")
    footer.wait_for(timeout=timeout_ms)
    return float(footer.inner_text().rsplit("built in", 1)[1].split("ms", 1)[0])


def kpi(page, label: str) -> str:
    """The value shown on the KPI card with this label."""
    card = page.locator("[data-testid=stMetric]").filter(has_text=label).first
    return card.locator("[data-testid=stMetricValue]").inner_text().strip()


def slider_key(page, key: str) -> None:
    """Press a key on the history slider (ArrowLeft: one version back, Home: the oldest)."""
    thumb = page.locator(".st-key-version input[type=range]").first
    thumb.focus()
    page.keyboard.press(key)


def load_page(page, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    page.goto(url)
    version = shown_version(page)
    return time.perf_counter() - started, version


def measure(url: str, moves: int, screenshot: str | None) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1250})
            load_s, version = load_page(page, url)
            steps, built = [], []
            for _ in range(moves):
                if version <= 0:
                    break
                started = time.perf_counter()
                slider_key(page, "ArrowLeft")
                version -= 1
                built.append(wait_for_version(page, version))
                steps.append(time.perf_counter() - started)
            if screenshot:
                # let the map draw: its canvas exists, then the tiles and icons arrive
                page.locator("canvas").first.wait_for(timeout=60_000)
                page.wait_for_timeout(5000)
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=screenshot, full_page=True)
            errors = page.locator("[data-testid=stException]").count()
        finally:
            browser.close()
    return {
        "page_load_s": round(load_s, 3),
        "slider_steps": len(steps),
        "slider_median_s": round(statistics.median(steps), 3) if steps else None,
        "slider_max_s": round(max(steps), 3) if steps else None,
        "server_build_median_ms": statistics.median(built) if built else None,
        "errors_on_page": errors,
    }


def main(argv: list[str] | None = None) -> int:
    from lakehouse.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="default: dashboard.port")
    parser.add_argument("--moves", type=int, default=10, help="slider steps back from live")
    parser.add_argument("--screenshot", help="save a full-page screenshot here")
    args = parser.parse_args(argv)
    settings = load_settings()
    with served(settings, args.port or settings.dashboard.port) as url:
        result = measure(url, args.moves, args.screenshot)
    print(json.dumps(result))
    return 1 if result["errors_on_page"] else 0


if __name__ == "__main__":
    sys.exit(main())
