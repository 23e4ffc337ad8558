"""Archive a small site to WARC, then recrawl it "tomorrow" fetching only what changed.

    python examples/archive.py --dir archive/

Serves a generated shop on 127.0.0.1 (examples/shop_site.py). Day 1 crawls it whole and
writes every request and response to DIR/shop.warc.gz. Then two product pages change, and
day 2 crawls again with the day-1 state as `since`: unchanged pages answer 304 (nothing
transferred, `changed: false`), the two edited ones come whole, and day 2's WARC (the next
free name, DIR/shop-00001.warc.gz) holds exactly that.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import shop_site
from warcio.archiveiterator import ArchiveIterator

import shoal


async def crawl(base: str, state: str, warc: str, since: str | None) -> list[shoal.Record]:
    config = shoal.Config(concurrency=10, per_host=10)
    async with shoal.Crawler(config, state=state, warc=warc) as crawler:
        return [r async for r in crawler.crawl([base + "/"], since=since)]


def responses(path: str) -> dict[str, int]:
    """HTTP status of every response record in a WARC file, by URL."""
    with open(path, "rb") as fh:
        return {rec.rec_headers.get_header("WARC-Target-URI"): rec.http_headers.get_statuscode()
                for rec in ArchiveIterator(fh) if rec.rec_type == "response"}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="archive")
    parser.add_argument("--products", type=int, default=30)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    warc = os.path.join(args.dir, "shop.warc.gz")
    async with shop_site.serve(args.products) as (base, pages):
        day1 = await crawl(base, os.path.join(args.dir, "day1.state.db"), warc, None)
        for i in (3, 4):  # overnight, two prices change
            pages[f"/products/{i}"] = pages[f"/products/{i}"].replace(
                'class="price">', 'class="price">1')
        day2 = await crawl(base, os.path.join(args.dir, "day2.state.db"), warc,
                           since=os.path.join(args.dir, "day1.state.db"))
    # day 1 wrote shop.warc.gz; day 2 the next free name, shop-00001.warc.gz
    files = sorted((f for f in os.listdir(args.dir) if f.endswith(".warc.gz")),
                   key=lambda f: (f != "shop.warc.gz", f))
    print(f"day 1: {len(day1)} pages, {sum(r.bytes for r in day1)} bytes; "
          f"WARC {files[0]} holds {len(responses(os.path.join(args.dir, files[0])))} "
          "responses")
    changed = sorted(r.url for r in day2 if r.changed)
    print(f"day 2: {len(day2)} pages, {sum(r.bytes for r in day2)} bytes; "
          f"{sum(1 for r in day2 if r.status == 304)} unchanged (304), changed: "
          + ", ".join(u.split("/", 3)[-1] for u in changed))
    print(f"WARC files: {', '.join(files)}")


if __name__ == "__main__":
    asyncio.run(main())
