"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright; no
browser download): start a crawl from the form, watch the charts move, cancel it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp import web

from tests.servers import html_page, site
from tests.service.harness import service

pytestmark = pytest.mark.timeout(90)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")


def slow_site(pages: int) -> dict[str, object]:
    """Pages that each link to the next few, answering after 40 ms: a crawl of a while."""

    def page(i: int) -> object:
        body = html_page(f"page {i}", [f"/p/{j}" for j in range(i + 1, min(pages, i + 4))])

        async def handler(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(0.04)
            return web.Response(text=body, content_type="text/html")

        return handler

    return {f"/p/{i}": page(i) for i in range(pages)}


async def test_dashboard_start_watch_cancel(tmp_path: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    async with site(slow_site(3000)) as srv, service(tmp_path) as svc, \
            async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                           headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(svc.base + "/")
            await page.wait_for_selector("text=connected")
            await page.select_option("#kind", "crawl")
            await page.fill("#urls", srv.url("/p/0"))
            await page.fill("input[name=per_host]", "4")
            await page.fill("input[name=max_pages]", "3000")
            await page.click("#start")
            await page.wait_for_function("window.shoal.selected !== null")
            job_id = await page.evaluate("window.shoal.selected")
            await page.wait_for_selector("#job-state.running", timeout=10_000)
            await page.wait_for_function("window.shoal.history.events >= 2", timeout=15_000)
            before = await page.evaluate("document.querySelector('#chart-rate').toDataURL()")
            await page.wait_for_function("window.shoal.history.events >= 5", timeout=15_000)
            after = await page.evaluate("document.querySelector('#chart-rate').toDataURL()")
            assert before != after  # the chart moved
            rates = await page.evaluate("window.shoal.history.rate")
            assert max(rates) > 0
            status = await page.evaluate("window.shoal.history.status['2xx']")
            assert status and max(status) > 0
            assert await page.locator("#hosts tbody tr").count() == 1
            assert await page.locator("#latest tbody tr").count() > 0
            assert await page.locator(f"#jobs tbody tr[data-id='{job_id}']").count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            await page.click("#cancel")
            await page.wait_for_selector("#job-state.cancelled", timeout=10_000)
            _, job = await svc.call("GET", f"/v1/jobs/{job_id}", expect=200)
            assert job["state"] == "cancelled" and 0 < job["counts"]["done"] < 3000
            assert await page.is_disabled("#cancel")

            async with page.expect_download() as info:
                await page.click("#export-jsonl")
            download = await info.value
            saved = ARTIFACTS / "export.jsonl"
            await download.save_as(str(saved))
            lines = saved.read_bytes().splitlines()
            assert len(lines) == job["counts"]["done"]
            assert errors == []
        finally:
            await browser.close()


async def test_dashboard_asks_for_a_token(tmp_path: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    from shoal.service.tokens import TokenStore

    db = str(tmp_path / "service.db")
    with TokenStore(db) as store:
        token, _ = store.create(read_only=True)
    async with service(tmp_path, db=db) as svc, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                           headless=True)
        try:
            page = await browser.new_page()
            await page.goto(svc.base + "/")
            await page.wait_for_selector("#token-form:not([hidden])")
            await page.fill("#token", token)
            await page.click("#token-form button")
            await page.wait_for_selector("text=connected")
            assert await page.is_hidden("#token-form")
            # read-only: the form's request is refused with the service's message
            await page.fill("#urls", "http://127.0.0.1/")
            await page.click("#start")
            await page.wait_for_selector("#form-error:has-text('read-only')")
        finally:
            await browser.close()


async def test_dashboard_fetch_from_an_uploaded_file(tmp_path: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    async with site({f"/{i}": html_page(f"p{i}") for i in range(50)}) as srv, \
            service(tmp_path) as svc, async_playwright() as pw:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(srv.url(f"/{i}") + "\n" for i in range(50)))
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                           headless=True)
        try:
            page = await browser.new_page()
            await page.goto(svc.base + "/")
            await page.wait_for_selector("text=connected")
            await page.select_option("#kind", "fetch")
            assert await page.is_hidden("input[name=max_pages]")
            await page.set_input_files("#file", str(urls))
            await page.click("#start")
            await page.wait_for_selector("#job-state.completed", timeout=15_000)
            job_id = await page.evaluate("window.shoal.selected")
        finally:
            await browser.close()
        _, job = await svc.call("GET", f"/v1/jobs/{job_id}", expect=200)
        assert job["urls"] == 50 and job["status_classes"] == {"2xx": 50}
