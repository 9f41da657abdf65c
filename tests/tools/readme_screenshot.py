"""Refresh the README's screenshot (docs/img/dashboard.png) from a real first load.

A first visitor runs `make run` and opens the page on a server that has been publishing
for a while: so does this. It starts `ticker serve` with the simulated feed, waits until
the server's history holds 600 ticks of AAPL, opens the dashboard in headless
Chromium and takes the picture as soon as the first screen is drawn (the chart and the
sparklines backfilled), not after a warm-up the visitor would not wait for.

    .venv/bin/python -m tests.tools.readme_screenshot [--out docs/img/dashboard.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.conftest import require
from tests.net import free_port
from tests.test_dashboard import (
    CHROMIUM_ARGS,
    ServerProcess,
    wait_first_screen,
    wait_for_history,
    wait_live,
)

ROOT = Path(__file__).resolve().parents[2]
HISTORY_TICKS = 600  # of AAPL: half a minute or so at the default rate


def main() -> None:
    """Start a server, let it publish, load the page once, save a viewport-sized PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = parser.parse_args()
    server = ServerProcess(free_port()).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=require("chromium"), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1200, "height": 780})
            if wait_for_history(page, server, "AAPL", HISTORY_TICKS) < HISTORY_TICKS:
                raise SystemExit("the server's history never reached the ticks wanted")
            page.goto(f"{server.url}/?symbols=AAPL,MSFT,GOOGL,AMZN,NVDA")
            wait_live(page)
            wait_first_screen(page)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.stop()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
