"""TLS failures become `tls` records: a real HTTPS server on loopback with an untrusted CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from aiohttp import web

import shoal
from tests.servers import html_page

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def https_site() -> AsyncIterator[str]:
    ca = trustme.CA()  # a CA nobody trusts: our client verifies against the system store
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html_page("secret"), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_untrusted_certificate_is_a_tls_record(https_site: str) -> None:
    (r,) = await shoal.fetch([https_site], shoal.Config(robots=False, retry=shoal.RetryPolicy(
        retries=2, backoff_base=0.01)))
    assert r.error is not None and r.error.kind == "tls", r
    assert "certificate" in r.error.message.lower()
    assert r.attempts == 1  # a bad certificate is not retried
    assert r.status is None and r.title is None


async def test_untrusted_robots_host_reports_tls_not_robots(https_site: str) -> None:
    # robots.txt fails on the certificate; so would the page: the record says why
    (r,) = await shoal.fetch([https_site], shoal.Config())
    assert r.error is not None and r.error.kind == "tls", r
