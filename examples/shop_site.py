"""A generated shop served on 127.0.0.1 for the examples (no internet needed).

``/products?page=P`` lists products (with pagination and an ad); ``/products/I`` is a
product page with a name, a price, JSON-LD and OpenGraph metadata. Pages are served with
ETags and honour ``If-None-Match``, like most web servers do for static files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

PER_PAGE = 10


def price(i: int) -> float:
    return round(5 + (i * 37 % 200) + (i % 100) / 100, 2)


def build(products: int) -> dict[str, str]:
    pages: dict[str, str] = {}
    count = (products + PER_PAGE - 1) // PER_PAGE
    for p in range(1, count + 1):
        items = "".join(
            f'<li><a class="product" href="/products/{i}">Product {i}</a></li>'
            for i in range((p - 1) * PER_PAGE, min(products, p * PER_PAGE)))
        nav = f'<a href="/products?page={p + 1}">next</a>' if p < count else ""
        pages[f"/products?page={p}"] = (
            f"<!doctype html><html><head><title>Shop, page {p}</title></head><body>"
            f'<ul>{items}</ul><nav class="pagination">{nav}</nav>'
            f'<aside><a href="/ads/{p}">special offer</a></aside></body></html>')
    for i in range(products):
        ld = json.dumps({"@context": "https://schema.org", "@type": "Product",
                         "sku": f"SKU-{i:05d}", "name": f"Product {i}",
                         "offers": {"@type": "Offer", "price": price(i),
                                    "priceCurrency": "EUR"}})
        pages[f"/products/{i}"] = (
            f"<!doctype html><html><head><title>Product {i}</title>"
            f'<meta property="og:title" content="Product {i}">'
            f'<script type="application/ld+json">{ld}</script></head><body>'
            f"<h1>Product {i}</h1><p class=\"price\">{price(i):.2f}</p>"
            f'<p class="stock">{"in stock" if i % 7 else "sold out"}</p>'
            f'<a href="/products/{i}/reviews">reviews</a></body></html>')
        pages[f"/products/{i}/reviews"] = (
            f"<!doctype html><html><head><title>Reviews of product {i}</title></head>"
            f'<body><p>{i % 5 + 1} stars</p><a href="/products/{i}">back</a></body></html>')
    for p in range(1, count + 1):
        pages[f"/ads/{p}"] = ("<!doctype html><html><head><title>Special offer</title>"
                              "</head><body><p>Buy now!</p></body></html>")
    pages["/"] = '<!doctype html><html><body><a href="/products?page=1">shop</a></body></html>'
    return pages


@contextlib.asynccontextmanager
async def serve(products: int = 120) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Serve the shop; yields (base URL, the pages by path, which may be changed)."""
    pages = build(products)

    async def handle(request: web.Request) -> web.Response:
        body = pages.get(request.raw_path)
        if body is None:
            return web.Response(status=404, text="not found")
        data = body.encode()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        headers = {"ETag": etag, "Content-Type": "text/html; charset=utf-8"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=data, headers=headers)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", pages
    finally:
        await runner.cleanup()
