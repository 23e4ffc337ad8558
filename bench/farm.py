"""Generate the benchmark's static web farm: hosts, pages, robots.txt, URL lists, ground truth.

Standard library only, deterministic (one seed), so every machine gets the same farm.

Layout under ``<dir>``::

    sites/<address>/robots.txt        allow everything, no crawl-delay
    sites/<address>/p/<n>.html        page n of that host (n = 0 .. pages-1), about 20 KB
    urls-small.txt                    pages n < pages/10 of every host, shuffled (10,000)
    urls-all.txt                      every page of every host, shuffled (100,000)
    urls-alias.txt                    /m/<k>/<n>.html, k < 10: ten aliases of every page,
                                      shuffled (1,000,000)
    truth.json                        title and link count of every page, crawl seeds
    meta.json                         the parameters the farm was made with

A server maps ``/m/<k>/<n>.html`` to ``/p/<n>.html`` of the same host (nginx: one rewrite;
``server.py`` the same), so the memory workload has a million distinct URLs without
a million files. A host is the loopback address a request arrived on.

The link graph has two closed, nested sets. Pages n < pages/10 ("small") link only to small
pages; pages n < pages/2 ("crawl") link only to crawl pages; the rest link anywhere. Inside
each set a cycle through all its pages keeps it strongly connected, so from
``seeds["small"]`` exactly hosts*pages/10 pages are reachable (10,000 for the full farm) and
from ``seeds["crawl"]`` exactly hosts*pages/2 (50,000). ``generate`` checks both by BFS.

Usage: python bench/farm.py DIR [--hosts 100] [--pages 1000] [--port 8088]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

SEED = 20261122
FORMAT = 3  # bump when the generated content changes

_WORD_TEXT = (
    "harbour lantern tide quiet river stone bridge market winter garden letter window "
    "morning evening station island mountain forest village orchard meadow castle tower "
    "library museum theatre festival kitchen bakery workshop gallery archive journal "
    "northern southern eastern western ancient modern simple careful gentle bright hidden "
    "silver copper golden wooden paper glass open distant local early late small great "
    "walk read build write travel gather listen follow notice remember explain measure "
    "repair collect compare describe discover imagine prepare protect question wander "
    "weather season harvest history science music painting poetry recipe journey voyage "
    "engine signal compass anchor sail rope map chart clock candle kettle basket ladder "
    "street corner square avenue alley harbourmaster keeper baker weaver potter miller "
    "about across after again against along among around because before behind below "
    "beside between beyond during except inside near through toward under until within "
    "the a an and or but of to in on at for with from by as is was are were be been this "
    "that these those it its their our your his her which who what when where why how "
    "very often always never sometimes perhaps almost quite rather still already soon"
)
WORDS = _WORD_TEXT.split()
ACCENTED = ["café", "naïve", "façade", "résumé", "Zürich", "São Paulo", "crème", "fjörd"]
SITE_NAMES = ["Gazette", "Review", "Notes", "Almanac", "Courier", "Ledger", "Chronicle",
              "Quarterly", "Herald", "Dispatch"]


# ---------------------------------------------------------------------------------------
# addresses and URLs


def host_address(i: int, first: int = 2) -> str:
    """Address of host i (0-based): 127.0.0.2, 127.0.0.3, ... (stays inside 127.0.0.0/8)."""
    n = first + i
    if not 1 <= n <= 254 * 254:
        raise ValueError(f"host index out of range: {i}")
    return f"127.0.{n // 256}.{n % 256}" if n > 255 else f"127.0.0.{n}"


def page_url(addr: str, port: int, n: int) -> str:
    return f"http://{addr}:{port}/p/{n}.html"


def alias_url(addr: str, port: int, k: int, n: int) -> str:
    return f"http://{addr}:{port}/m/{k}/{n}.html"


def page_of(url: str) -> tuple[str, int] | None:
    """(address, n) of a farm URL (/p/<n>.html or /m/<k>/<n>.html), else None."""
    parts = urlsplit(url)
    host = parts.hostname
    path = parts.path
    if host is None or not path.endswith(".html"):
        return None
    segs = path[1:-5].split("/")
    try:
        if len(segs) == 2 and segs[0] == "p":
            return host, int(segs[1])
        if len(segs) == 3 and segs[0] == "m":
            int(segs[1])
            return host, int(segs[2])
    except ValueError:
        return None
    return None


# ---------------------------------------------------------------------------------------
# page content


def _group_limit(n: int, pages: int) -> int:
    """Links from page n may point to pages < this limit (closed nested sets)."""
    small, crawl = pages // 10, pages // 2
    if n < small:
        return small
    if n < crawl:
        return crawl
    return pages


def _cycle_successor(h: int, n: int, hosts: int, pages: int) -> tuple[int, int]:
    """Next page on a cycle through every page of n's set: hosts first, then n."""
    small, crawl = pages // 10, pages // 2
    lo, hi = (0, small) if n < small else (small, crawl) if n < crawl else (crawl, pages)
    h2, n2 = h + 1, n
    if h2 == hosts:
        h2, n2 = 0, n + 1
        if n2 == hi:
            n2 = lo
    return h2, n2


class PageMaker:
    """Builds page HTML; paragraphs come from a shared pool so generation is quick."""

    def __init__(self, rng: random.Random, *, hosts: int, pages: int, port: int,
                 first: int) -> None:
        self.hosts, self.pages, self.port, self.first = hosts, pages, port, first
        self.addrs = [host_address(i, first) for i in range(hosts)]
        self.pool = [self._paragraph(rng) for _ in range(1500)]

    @staticmethod
    def _sentence(rng: random.Random) -> str:
        words = rng.choices(WORDS, k=rng.randint(8, 18))
        if rng.random() < 0.05:
            words[rng.randrange(len(words))] = rng.choice(ACCENTED)
        s = " ".join(words)
        return s[0].upper() + s[1:] + rng.choice(".....?!")

    def _paragraph(self, rng: random.Random) -> str:
        return html.escape(" ".join(self._sentence(rng) for _ in range(rng.randint(4, 9))),
                           quote=False)

    def title(self, rng: random.Random, h: int, n: int) -> str:
        words = [w.capitalize() for w in rng.choices(WORDS[:150], k=rng.randint(3, 6))]
        if rng.random() < 0.15:
            words.insert(rng.randrange(1, len(words)), "&")
        if rng.random() < 0.10:
            words.append(rng.choice(ACCENTED))
        site = f"{SITE_NAMES[h % len(SITE_NAMES)]} {h}"
        return f"{' '.join(words)} — {site}, no. {n}"

    def _href(self, rng: random.Random, h: int, n: int, target_h: int, target_n: int) -> str:
        if target_h != h:
            return page_url(self.addrs[target_h], self.port, target_n)
        r = rng.random()
        if r < 0.5:
            return f"/p/{target_n}.html"
        if r < 0.8:
            return f"{target_n}.html"
        return page_url(self.addrs[h], self.port, target_n)

    def links(self, rng: random.Random, h: int, n: int
              ) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
        """(href, text) of every <a href> on page (h, n), 20 to 40 of them; the pages linked."""
        total = rng.randint(20, 40)
        limit = _group_limit(n, self.pages)
        out: list[tuple[str, str]] = [("/p/0.html", "Home"), ("#top", "Back to top"),
                                      ("mailto:editor@example.invalid", "Write to us")]
        sh, sn = _cycle_successor(h, n, self.hosts, self.pages)
        out.append((self._href(rng, h, n, sh, sn), "Next story"))
        targets = [(h, 0), (sh, sn)]
        while len(out) < total:
            if rng.random() < 0.85 or self.hosts == 1:
                th = h
            else:
                th = rng.randrange(self.hosts - 1)
                th += th >= h
            tn = rng.randrange(limit)
            text = " ".join(rng.choices(WORDS[:150], k=rng.randint(2, 4))).capitalize()
            out.append((self._href(rng, h, n, th, tn), text))
            targets.append((th, tn))
        return out, targets

    def page(self, rng: random.Random, h: int, n: int
             ) -> tuple[str, str, int, list[tuple[int, int]]]:
        """(html, title, link count, pages linked) of page (h, n)."""
        title = self.title(rng, h, n)
        links, targets = self.links(rng, h, n)
        target = rng.randint(18_500, 21_500)
        esc = html.escape
        nav = "".join(f'<li><a href="{esc(u)}">{esc(t)}</a></li>' for u, t in links[:2])
        related_n = rng.randint(4, 9)
        body_links = links[4:len(links) - related_n]
        related = links[len(links) - related_n:]
        head = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(title, quote=False)}</title>\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="description" content="{esc(rng.choice(self.pool)[:150])}">\n'
            '<link rel="stylesheet" href="/static/site.css">\n'
            '<link rel="icon" href="/favicon.ico">\n'
            "</head>\n<body>\n"
            '<a id="top"></a>\n'
            f'<header class="site-header"><div class="brand">{esc(title.split(" — ")[1])}'
            f'</div>\n<nav><ul class="menu">{nav}</ul></nav></header>\n'
            f'<main>\n<article class="story">\n<h1>{esc(title.split(" — ")[0])}</h1>\n'
            f'<p class="byline">By {rng.choice(WORDS[:40]).capitalize()} '
            f"{rng.choice(WORDS[40:80]).capitalize()} · {rng.randint(1, 28)} "
            f"{rng.choice(['March', 'April', 'May', 'June'])} 2026</p>\n"
        )
        tail_parts = [
            "</article>\n<aside class=\"related\"><h2>Related</h2><ul>\n",
            "".join(f'<li><a href="{esc(u)}">{esc(t)}</a></li>\n' for u, t in related),
            "</ul></aside>\n</main>\n<footer><p>",
            f'<a href="{esc(links[2][0])}">{esc(links[2][1])}</a> · '
            f'<a href="{esc(links[3][0])}" rel="next">{esc(links[3][1])}</a></p>\n'
            "<p class=\"small\">All stories are fiction. Generated for a benchmark.</p>"
            "</footer>\n<script>document.documentElement.className += ' js';</script>\n"
            "</body>\n</html>\n",
        ]
        tail = "".join(tail_parts)
        size = len(head) + len(tail)
        paras: list[str] = []
        i = 0
        while size < target:
            p = rng.choice(self.pool)
            if i < len(body_links):
                u, t = body_links[i]
                cut = p.find(" ", len(p) // 2)
                p = f'{p[:cut]} <a href="{esc(u)}">{esc(t)}</a>{p[cut:]}'
                i += 1
            chunk = f"<p>{p}</p>\n"
            paras.append(chunk)
            size += len(chunk.encode())
        while i < len(body_links):  # pages that hit the size early still get every link
            u, t = body_links[i]
            paras.append(f'<p>See also <a href="{esc(u)}">{esc(t)}</a>.</p>\n')
            i += 1
        doc = head + "".join(paras) + tail
        return doc, title, len(links), targets


# ---------------------------------------------------------------------------------------
# generation


def _meta(hosts: int, pages: int, port: int, first: int) -> dict[str, int]:
    return {"format": FORMAT, "seed": SEED, "hosts": hosts, "pages": pages, "port": port,
            "first": first}


def is_current(root: Path, *, hosts: int, pages: int, port: int, first: int = 2) -> bool:
    """True when ``root`` holds a complete farm made with these parameters."""
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta == {**_meta(hosts, pages, port, first), "complete": True}


def _reachable(seed: tuple[int, int], edges: dict[tuple[int, int], list[tuple[int, int]]]
               ) -> int:
    seen = {seed}
    todo = deque([seed])
    while todo:
        for nxt in edges[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return len(seen)


def generate(root: Path, *, hosts: int = 100, pages: int = 1000, port: int = 8088,
             first: int = 2, with_1m: bool = True, log: bool = True) -> dict[str, object]:
    """Write the farm under ``root`` (replacing any earlier one) and return its truth."""
    if pages < 10 or pages % 10:
        raise ValueError(f"pages must be a positive multiple of 10, got {pages}")
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)
    rng = random.Random(SEED)
    maker = PageMaker(rng, hosts=hosts, pages=pages, port=port, first=first)
    addrs = maker.addrs
    truth: dict[str, list[list[object]]] = {}
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    robots = ("# Benchmark farm: everything allowed, no crawl-delay.\n"
              "User-agent: *\nAllow: /\n")
    total_bytes = 0
    for h, addr in enumerate(addrs):
        site = root / "sites" / addr
        (site / "p").mkdir(parents=True, exist_ok=True)
        (site / "robots.txt").write_text(robots)
        rows: list[list[object]] = []
        for n in range(pages):
            doc, title, nlinks, targets = maker.page(rng, h, n)
            data = doc.encode()
            total_bytes += len(data)
            (site / "p" / f"{n}.html").write_bytes(data)
            rows.append([title, nlinks])
            edges[(h, n)] = targets
        truth[addr] = rows
        if log and (h + 1) % 10 == 0:
            print(f"farm: {h + 1}/{hosts} hosts written", file=sys.stderr, flush=True)
    seeds = {"small": page_url(addrs[0], port, 0), "crawl": page_url(addrs[0], port, pages // 10)}
    reach = {"small": _reachable((0, 0), edges), "crawl": _reachable((0, pages // 10), edges)}
    want = {"small": hosts * (pages // 10), "crawl": hosts * (pages // 2)}
    if reach != want:
        raise RuntimeError(f"link graph: reachable {reach}, expected {want}")

    lrng = random.Random(SEED + 1)
    small = [page_url(a, port, n) for a in addrs for n in range(pages // 10)]
    full = [page_url(a, port, n) for a in addrs for n in range(pages)]
    lrng.shuffle(small)
    lrng.shuffle(full)
    _write_lines(root / "urls-small.txt", small)
    _write_lines(root / "urls-all.txt", full)
    if with_1m:
        big = [alias_url(a, port, k, n) for a in addrs for k in range(10) for n in range(pages)]
        lrng.shuffle(big)
        _write_lines(root / "urls-alias.txt", big)
        del big
    out = {"hosts": addrs, "port": port, "pages": pages, "pages_by_host": truth,
           "seeds": seeds, "reachable": want}
    (root / "truth.json").write_text(json.dumps(out, ensure_ascii=False))
    (root / "meta.json").write_text(json.dumps({**_meta(hosts, pages, port, first),
                                                "complete": True}))
    if log:
        print(f"farm: {hosts * pages} pages, {total_bytes / hosts / pages / 1000:.1f} kB "
              f"average, reachable {reach}, in {time.monotonic() - t0:.0f}s",
              file=sys.stderr, flush=True)
    return out


def _write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# ground truth for verification


class Truth:
    """Expected title and link count for any farm URL."""

    def __init__(self, root: Path) -> None:
        data = json.loads((root / "truth.json").read_text())
        self.port: int = data["port"]
        self.pages: int = data["pages"]
        self.hosts: list[str] = data["hosts"]
        self.seeds: dict[str, str] = data["seeds"]
        self.reachable: dict[str, int] = data["reachable"]
        self._rows: dict[str, list[list[object]]] = data["pages_by_host"]

    def expect(self, url: str) -> tuple[str, int] | None:
        """(title, links) of the page a farm URL serves, None for anything else."""
        key = page_of(url)
        if key is None:
            return None
        rows = self._rows.get(key[0])
        if rows is None or not 0 <= key[1] < len(rows) or urlsplit(url).port != self.port:
            return None
        title, links = rows[key[1]]
        return str(title), int(links)  # type: ignore[call-overload]

    def crawl_set(self, which: str) -> Iterator[str]:
        """Every URL reachable from seeds[which]: the whole closed set."""
        limit = self.pages // 10 if which == "small" else self.pages // 2
        for addr in self.hosts:
            for n in range(limit):
                yield page_url(addr, self.port, n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--pages", type=int, default=1000, help="pages per host")
    ap.add_argument("--port", type=int, default=8088)
    ap.add_argument("--no-1m", action="store_true", help="skip the million-URL list")
    args = ap.parse_args(argv)
    generate(args.dir, hosts=args.hosts, pages=args.pages, port=args.port,
             with_1m=not args.no_1m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
