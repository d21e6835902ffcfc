"""The Dagster UI in a real browser: the webserver on the embedded default (nothing
configured), opened in headless Chromium (Debian's `chromium`, driven by Playwright).

The screenshot of the asset graph is the one the README shows: run with
TAXI_UPDATE_SCREENSHOTS=1 to refresh docs/asset-graph.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, embedded_default_env, free_port, kill_processes_under, wait_http

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("TAXI_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "asset-graph.png"
# What README command 1 (the demo: green 2019-01 by default) materializes, as the README's picture shows.
CHAIN = ["green_trips_csv", "green_trips_postgres", "green_trips_gcs", "green_trips_bigquery"]


@pytest.fixture
def webserver(tmp_path, source_server):
    """dagster-webserver as a user starts it, with no TAXI_*/GCP_* configuration, after README
    command 1 (the demo, as it is: no arguments) materialized green 2019-01: neither sets DAGSTER_HOME, the webserver
    opens the instance `python -m taxi_assets dagster-home` names, as the README says."""
    env = embedded_default_env(tmp_path / "state", source_server.url)
    env.pop("DAGSTER_HOME", None)
    try:
        demo = [sys.executable, "-m", "taxi_assets", "demo"]
        result = subprocess.run(demo, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        kill_processes_under(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    home = [sys.executable, "-m", "taxi_assets", "dagster-home"]
    env["DAGSTER_HOME"] = subprocess.run(
        home, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert env["DAGSTER_HOME"] == str(tmp_path / "state" / "dagster")
    port = free_port()
    log = tmp_path / "webserver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                Path(sys.executable).parent / "dagster-webserver",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "workspace.yaml",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/server_info", proc, "dagster-webserver", 120, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", header[16:24])


def test_the_asset_graph_renders_in_chromium(webserver, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (python3 dev.py test does it as root)")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # No sandbox (root in CI); no background calls to Google (no internet here).
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{webserver}/locations/taxi_assets/asset-groups/green_taxi", wait_until="networkidle")
            for asset in CHAIN:
                page.get_by_text(asset, exact=True).first.wait_for(state="visible", timeout=30_000)
            skip = page.get_by_role("button", name="Skip")  # the first-visit community dialog, which comes late
            with contextlib.suppress(PlaywrightTimeout):
                skip.first.wait_for(state="visible", timeout=5_000)
                skip.first.click()
            # Each node's partitions load after the graph: wait for them (they read "Loading..." first).
            expect(page.get_by_text("31 partitions")).to_have_count(len(CHAIN), timeout=30_000)
            # The demo's month shows: 1 of 31 partitions on every asset, BigQuery's checks passed.
            expect(page.get_by_text("3% filled")).to_have_count(len(CHAIN), timeout=30_000)
            expect(page.get_by_text("2 / 2 Passed")).to_have_count(1, timeout=30_000)
            # As the README describes the picture: every check passed but the Postgres asset's one
            # warning (the generated month's duplicates).
            shown = page.get_by_text(re.compile(r"^\d+ / \d+ Passed$")).all_inner_texts()
            failed = sorted(int(total) - int(passed) for passed, total in (re.findall(r"\d+", t) for t in shown))
            assert failed == [0, 0, 1], shown
            shot = tmp_path / "asset-graph.png"
            page.screenshot(path=shot)
        finally:
            browser.close()
    assert _png_size(shot) == (1600, 900) and shot.stat().st_size > 30_000
    if os.environ.get("TAXI_UPDATE_SCREENSHOTS"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
    assert SCREENSHOT.is_file(), "the README shows docs/asset-graph.png: run with TAXI_UPDATE_SCREENSHOTS=1"
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"!\[[^]]*\bgreen\b[^]]*\]\(docs/asset-graph\.png\)", readme), (
        "the README's picture is the green chain"
    )
