"""Screenshot of a bench-report page for the docs (results/report_screenshot.png).

    .venv/bin/python scripts/report_screenshot.py runs/demo/report.html \
        results/report_screenshot.png

Playwright drives the system Chromium (``apt-get install chromium``); it also prints how long
the page took to open and draw its first chart, and fails if the page logged an error or asked
for anything outside itself.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(report: str, out: str) -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium not found; apt-get install chromium", file=sys.stderr)
        return 2
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors, outside = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None,
        )
        start = time.perf_counter()
        page.goto(Path(report).resolve().as_uri())
        page.wait_for_selector("#overview div.plot .main-svg")
        opened = time.perf_counter() - start
        paint = page.evaluate(
            "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime"
        )
        page.screenshot(path=out)
        browser.close()
    size = Path(report).stat().st_size / 1e6
    print(
        f"{report}: {size:.1f} MB; first contentful paint {(paint or 0) / 1000:.2f} s, first "
        f"chart drawn {opened:.2f} s after loading began; wrote {out}"
    )
    if errors or outside:
        print(
            f"error: console errors {errors}, requests outside the page {outside}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
