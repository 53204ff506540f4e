"""Screenshots of the three console pages, taken in headless Debian chromium via Playwright.

Writes ``docs/img/console-{live,planner,sql}.png`` from a fixture run (a simulated
fleet through the real predictor and planner policy, ``benchmarks.console_fixture``)
in a fresh temporary chDB (or ``--clickhouse-url``). Playwright's own browser download
does not work here, so it drives ``/usr/bin/chromium`` (apt: chromium); the
browser tests share :func:`launch_chromium`.

Usage: ``shardsense screenshots [--out docs/img]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "chromium_missing", "launch_chromium", "main", "shoot"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: apt-get install -y chromium chromium-driver"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, no sandbox (containers), no background traffic."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _settle(page: Any) -> None:
    """Wait until Dash has no callback in flight and plotly has drawn."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function(
        "() => !document.querySelector('[data-dash-is-loading=\"true\"]')", timeout=15_000
    )
    page.wait_for_timeout(400)


def shoot(base_url: str, out_dir: Path, *, width: int = 1440) -> list[Path]:
    """Open each page at ``base_url``, wait for its content and save a full-page PNG."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(base_url)
            page.wait_for_selector("#stragglers-table tr.straggler", timeout=20_000)
            page.wait_for_selector("#batch-time-graph .main-svg", timeout=20_000)
            _settle(page)
            written.append(_save(page, out_dir / "console-live.png"))

            page.goto(base_url.rstrip("/") + "/planner")
            page.wait_for_selector("#maps-table", timeout=20_000)
            page.wait_for_selector("#step-graph .main-svg", timeout=20_000)
            _settle(page)
            written.append(_save(page, out_dir / "console-planner.png"))

            page.goto(base_url.rstrip("/") + "/sql")
            page.click("#sql-run")
            page.wait_for_selector("#sql-table", timeout=20_000)
            _settle(page)
            written.append(_save(page, out_dir / "console-sql.png"))
        finally:
            browser.close()
    return written


def _save(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Write a fixture run, serve the console on a free loopback port, shoot each page."""
    from benchmarks.console_fixture import write_run
    from dash_app.server import ConsoleServer
    from shardsense.clickhouse import connect
    from shardsense.schema import apply_schema
    from shardsense.settings import Settings

    parser = argparse.ArgumentParser(prog="shardsense screenshots", description=__doc__)
    parser.add_argument("--out", default="docs/img", help="folder for the PNGs")
    parser.add_argument("--clickhouse-url", default="", help="default: a fresh temporary chDB")
    parser.add_argument("--job-id", default="demo")
    args = parser.parse_args(argv)
    reason = chromium_missing()
    if reason:
        print(f"cannot take screenshots: {reason}")
        return 2
    tmp = None if args.clickhouse_url else tempfile.mkdtemp(prefix="shardsense-shots-")
    url = args.clickhouse_url or f"chdb://{tmp}/clickhouse"
    try:
        client = connect(url)
        apply_schema(client)
        write_run(client, args.job_id)
        settings = Settings.from_env({}, clickhouse_url=url, job_id=args.job_id)
        with ConsoleServer(settings, client=client, port=0) as server:
            for path in shoot(server.url, Path(args.out)):
                print(path)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
