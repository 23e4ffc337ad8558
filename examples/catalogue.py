"""Scrape a product catalogue into Parquet with a ten-line handler.

    python examples/catalogue.py --out products.parquet

Serves a generated shop on 127.0.0.1 (examples/shop_site.py), crawls it from the first
listing page, extracts one item per product, and exports the items to Parquet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile

import shop_site

import shoal


async def scrape(base: str, state: str) -> list[shoal.Record]:
    crawler = shoal.Crawler(shoal.Config(concurrency=20, per_host=20), state=state)

    @crawler.route(r"/products\?page=\d+$")
    async def listing(page: shoal.Page):
        for href in page.links("a.product, .pagination a"):  # not the ads
            yield page.follow(href)

    @crawler.route(r"/products/\d+$")
    async def product(page: shoal.Page):
        data = page.jsonld()[0]
        yield {"sku": data["sku"], "name": page.css_first("h1").text(),
               "price": float(page.css_first(".price").text()),
               "currency": data["offers"]["priceCurrency"],
               "in_stock": page.css_first(".stock").text() == "in stock", "url": page.url}

    async with crawler:
        return [r async for r in crawler.crawl([base + "/products?page=1"], fresh=True)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="products.parquet")
    parser.add_argument("--products", type=int, default=120)
    parser.add_argument("--state", default=None, help="keep the run's state here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = args.state or os.path.join(tmp, "catalogue.state.db")
        async with shop_site.serve(args.products) as (base, _):
            records = await scrape(base, state)
        count = shoal.export_items(state, "parquet", args.out)
    failed = sum(1 for r in records if r.error is not None)
    print(f"crawled {len(records)} pages ({failed} failed), wrote {count} products "
          f"to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
