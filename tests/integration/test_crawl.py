"""Crawl mode against generated loopback sites: depth, parent, dedupe, scope, links, budgets.

The sites are link graphs built here from a fixed random seed; the test computes what a
crawl must reach (BFS from the seeds) and checks the records and the servers' request logs
against it, through the library (``shoal.crawl``, ``shoal.Crawler``) and the CLI.

Most graphs are "tree-safe": a random spanning tree plus extra links (cycles back to
ancestors, links to siblings, uncles and the seeds) that only ever point at pages already
in the frontier when the linking page is parsed. On such a graph the first link found to a
page is always its tree edge, so its depth and parent are exact whatever the order of
concurrent fetches. General graphs, where a page can be found first along a longer path,
are used where only order-independent properties are asserted, and for the depth bug below.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import shoal
from shoal.core.scope import registrable_domain
from tests.conftest import read_records, run_shoal, shoal_cmd
from tests.servers import Route, Site, html_page, redirect, robots_txt, site, sites, slow

pytestmark = pytest.mark.timeout(120)

RECORD_FIELDS = {"url", "final_url", "status", "error", "content_type", "bytes", "elapsed_ms",
                 "attempts", "depth", "redirects", "title", "links", "sha256", "fetched_at"}
FAST = shoal.Config(concurrency=20, per_host=20, timeout=10)  # robots.txt on (404: allowed)


# --------------------------------------------------------------------------- link graphs


@dataclass
class Graph:
    """Pages ``0..n-1`` served at ``/g/<i>``; ``links[i]`` in document order."""

    links: dict[int, list[int]]
    seeds: list[int]

    def depths(self, seeds: Iterable[int] | None = None) -> dict[int, int]:
        """BFS distance of every page reachable from the seeds."""
        start = list(self.seeds if seeds is None else seeds)
        depth = dict.fromkeys(start, 0)
        queue = deque(start)
        while queue:
            page = queue.popleft()
            for nxt in self.links[page]:
                if nxt not in depth:
                    depth[nxt] = depth[page] + 1
                    queue.append(nxt)
        return depth

    def routes(self, *, delay: tuple[float, float] | None = None, rng_seed: int = 0
               ) -> dict[str, Route]:
        """``/g/<i>`` -> its page; with ``delay`` each answers after a fixed random pause."""
        rng = random.Random(rng_seed)
        out: dict[str, Route] = {}
        for page, targets in self.links.items():
            doc = html_page(f"g{page}", [f"/g/{t}" for t in targets])
            out[f"/g/{page}"] = doc if delay is None else slow(rng.uniform(*delay), doc)
        return out


def tree_graph(n: int, *, seed: int, roots: int = 2, fanout: tuple[int, int] = (2, 6),
               extra: int = 3, orphans: int = 20) -> Graph:
    """A tree-safe graph: ``n`` reachable pages under ``roots`` seeds, plus ``orphans``
    pages that link into the graph but that no page links to."""
    rng = random.Random(seed)
    parent: dict[int, int | None] = dict.fromkeys(range(roots))
    children: dict[int, list[int]] = {i: [] for i in range(roots)}
    queue = deque(range(roots))
    nxt = roots
    while nxt < n:
        node = queue.popleft()
        for _ in range(rng.randint(*fanout)):
            if nxt >= n:
                break
            parent[nxt], children[nxt] = node, []
            children[node].append(nxt)
            queue.append(nxt)
            nxt += 1
    links: dict[int, list[int]] = {}
    for node in range(n):
        safe: list[int] = list(range(roots))
        up = parent[node]
        while up is not None:  # ancestors (cycles) and their children (siblings, uncles)
            safe.append(up)
            safe.extend(children[up])
            up = parent[up]
        picks = rng.sample(safe, min(len(safe), rng.randint(0, extra)))
        if rng.random() < 0.1:
            picks.append(node)  # a link to itself
        out = children[node] + picks + rng.sample(children[node], len(children[node]) // 2)
        rng.shuffle(out)
        links[node] = out
    for orphan in range(n, n + orphans):
        links[orphan] = rng.sample(range(n), 3)
    return Graph(links, list(range(roots)))


def random_graph(n: int, *, seed: int, degree: tuple[int, int] = (2, 6),
                 orphans: int = 20) -> Graph:
    """A general graph: every page links to random pages (cycles, cross links, anything)."""
    rng = random.Random(seed)
    links = {i: rng.sample(range(n), rng.randint(*degree)) for i in range(n)}
    for orphan in range(n, n + orphans):
        links[orphan] = rng.sample(range(n), 3)
    return Graph(links, [0])


def gid(url: str | None) -> int:
    assert url is not None and "/g/" in url, url
    return int(url.rsplit("/", 1)[1])


def page_requests(srv: Site) -> Counter[str]:
    return Counter(p for p in srv.log.paths() if p != "/robots.txt")


def check_lineage(graph: Graph, by_id: dict[int, dict[str, object]]) -> None:
    """Seeds at depth 0 without parent; every other record's parent was recorded one level
    up and really links to it."""
    for page, rec in by_id.items():
        if page in graph.seeds:
            assert rec["depth"] == 0 and rec["parent"] is None, rec
            continue
        up = gid(rec["parent"])  # type: ignore[arg-type]
        assert page in graph.links[up], (page, up)
        assert up in by_id, f"parent {up} of {page} has no record"
        assert by_id[up]["depth"] == rec["depth"] - 1, (rec, by_id[up])  # type: ignore[operator]


async def crawl_records(seeds: Sequence[str], config: shoal.Config = FAST, **options: object
                        ) -> list[shoal.Record]:
    return await shoal.crawl(seeds, config, **options)


# --------------------------------------------------------------------------- 1. depth, parent


@pytest.mark.parametrize("max_depth", [0, 1, 2, None])
async def test_max_depth_yields_exactly_the_pages_within_it(max_depth: int | None) -> None:
    graph = tree_graph(300, seed=11)
    depths = graph.depths()
    assert len(depths) == 300 and max(depths.values()) >= 4
    expected = {p for p, d in depths.items() if max_depth is None or d <= max_depth}
    async with site(graph.routes()) as srv:
        recs = await crawl_records([srv.url(f"/g/{s}") for s in graph.seeds],
                                   max_depth=max_depth)
        requests = page_requests(srv)
        robots = srv.log.count(path_prefix="/robots.txt")
    by_id = {gid(r.url): r.to_dict() for r in recs}
    assert len(by_id) == len(recs), "a page was recorded twice"
    assert set(by_id) == expected
    assert requests == Counter({f"/g/{p}": 1 for p in expected})  # once; orphans never
    assert robots == 1
    for page, rec in by_id.items():
        assert rec["status"] == 200 and rec["error"] is None, rec
        assert rec["depth"] == depths[page], rec
        assert rec["links"] == len(graph.links[page])
        assert rec["final_url"] == rec["url"] and rec["title"] == f"g{page}"
    check_lineage(graph, by_id)


@pytest.mark.parametrize("max_depth", [None, 3])
async def test_depth_is_the_shortest_link_distance_even_when_a_short_path_is_slow(
        max_depth: int | None) -> None:
    # s -> a -> c -> x -> y and s -> b -> x: x is 2 links from s, y is 3. b answers slowly,
    # so the longer path through a and c reaches x first.
    routes: dict[str, Route] = {
        "/s": html_page("s", ["/a", "/b"]),
        "/a": html_page("a", ["/c"]),
        "/b": slow(1.5, html_page("b", ["/x"])),
        "/c": html_page("c", ["/x"]),
        "/x": html_page("x", ["/y"]),
        "/y": html_page("y"),
    }
    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/s")], max_depth=max_depth)
    depth = {r.url.rsplit("/", 1)[1]: r.depth for r in recs}
    shortest = {"s": 0, "a": 1, "b": 1, "c": 2, "x": 2, "y": 3}
    if max_depth is not None:
        # with a depth limit the crawl goes level by level: depths are exact and y, three
        # links from s, is within the limit
        assert depth == shortest
    else:
        # without one, nothing waits for the slow page: x is recorded at the depth of the
        # path that reached it first (documented), and every page is still fetched
        assert set(depth) == set(shortest)
        assert all(depth[p] >= shortest[p] for p in shortest)


async def test_general_graph_reaches_everything_once_with_consistent_lineage() -> None:
    graph = random_graph(300, seed=5, degree=(3, 8))
    depths = graph.depths()
    async with site(graph.routes()) as srv:
        recs = await crawl_records([srv.url("/g/0")])
        requests = page_requests(srv)
    by_id = {gid(r.url): r.to_dict() for r in recs}
    assert len(by_id) == len(recs)
    assert set(by_id) == set(depths)
    assert requests == Counter({f"/g/{p}": 1 for p in depths})
    assert all(rec["depth"] >= depths[p] for p, rec in by_id.items())  # type: ignore[operator]
    check_lineage(graph, by_id)


# --------------------------------------------------------------------------- 2. each page once


class LoopbackResolver(AbstractResolver):
    """Answers 127.0.0.1 for every name, so named test hosts stay on loopback."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.add(host)
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


async def test_equivalent_spellings_of_a_link_are_fetched_once() -> None:
    name = "www.example.test"
    routes: dict[str, Route] = {}
    async with site(routes) as srv:
        port = srv.port
        spellings = [
            "/a", "/a#top", "#only-a-fragment", "a", "./a",
            f"HTTP://{name}:{port}/a", f"http://WWW.Example.TEST:{port}/a",
            f"Http://{name.upper()}:{port}/a#x", f"http://{name}:0{port}/a",
            "/x/../a", "/./a", "/b/./c/../../a", f"//{name}:{port}/a",
            "/~user", "/%7Euser", "/%7euser",
            "/A",  # path case is kept: another page
            "/q?x=1", "/q?x=1#f", "/q?x=2",
            "/", "/#top", f"http://{name}:{port}",
        ]
        srv.add({
            "/": html_page("root", spellings),
            "/a": html_page("a", ["/", "/%7Euser", "../a", "/a?"]),
            "/A": html_page("A", ["/a#again"]),
            "/~user": html_page("user", ["/%7Euser#x", "/%7euser"]),
            "/q?x=1": html_page("q1", ["/q?x=1", "?x=2"]),
            "/q?x=2": html_page("q2", ["/q?x=1#end"]),
        })
        resolver = LoopbackResolver()
        async with shoal.Crawler(FAST, resolver=resolver) as crawler:
            recs = [r async for r in crawler.crawl([f"http://{name}:{port}/"])]
        requests = page_requests(srv)
    base = f"http://{name}:{port}"
    urls = Counter(r.url for r in recs)
    assert urls == Counter(base + p for p in ["/", "/a", "/A", "/~user", "/q?x=1", "/q?x=2"])
    assert all(r.status == 200 for r in recs)
    assert max(requests.values()) == 1, requests
    assert sum(requests.values()) == 6
    assert resolver.asked == {name}


# --------------------------------------------------------------------------- 3. scope


def scope_routes(own: str, others: Sequence[Site]) -> dict[str, Route]:
    """``/`` links to ``/p/1``, ``/p/2`` and to ``/`` and ``/p/1`` on every other site."""
    away = [s.url(p) for s in others for p in ("/", "/p/1")]
    return {
        "/": html_page(f"{own} home", ["/p/1", "/p/2", *away]),
        "/p/1": html_page(f"{own} 1", ["/", "/p/2"]),
        "/p/2": html_page(f"{own} 2", ["/p/1"]),
    }


@pytest.mark.parametrize("scope", ["host", "any"])
async def test_host_scope_stays_on_the_seed_host_and_any_follows(scope: str) -> None:
    async with sites(2) as (home, away):
        home.add(scope_routes("home", [away]))
        away.add(scope_routes("away", [home]))
        options = {} if scope == "host" else {"scope": scope}  # host is the default
        async with shoal.Crawler(FAST) as crawler:
            recs = [r async for r in crawler.crawl([home.url("/")], **options)]
            assert crawler.last_result is not None
            stats = crawler.last_result.stats
    urls = sorted(r.url for r in recs)
    ours = sorted(home.url(p) for p in ("/", "/p/1", "/p/2"))
    if scope == "host":
        assert urls == ours
        assert stats.out_of_scope == 2  # each distinct link once
        assert away.log.count() == 0  # not even its robots.txt
    else:
        assert urls == sorted(ours + [away.url(p) for p in ("/", "/p/1", "/p/2")])
        assert stats.out_of_scope == 0
        assert page_requests(away) == Counter({"/": 1, "/p/1": 1, "/p/2": 1})
        assert away.log.count(path_prefix="/robots.txt") == 1
    assert page_requests(home) == Counter({"/": 1, "/p/1": 1, "/p/2": 1})


@pytest.mark.parametrize("scope", ["domain", "host"])
async def test_domain_scope_follows_the_registrable_domain_only(scope: str) -> None:
    assert registrable_domain("shop.example.test") == "example.test"
    async with sites(3) as (www, shop, other):
        hosts = {"www": "www.example.test", "shop": "shop.example.test", "other": "other.test"}
        named = {"www": www, "shop": shop, "other": other}

        def url(key: str, path: str) -> str:
            return named[key].url(path, host=hosts[key])

        for key, srv in named.items():
            away = [url(k, p) for k in named if k != key for p in ("/", "/p/1")]
            srv.add({"/": html_page(key, ["/p/1", *away]),
                     "/p/1": html_page(f"{key} 1", ["/", url(key, "/p/2")]),
                     "/p/2": html_page(f"{key} 2", [f"http://{hosts[key].upper()}:{srv.port}/"])})
        resolver = LoopbackResolver()
        async with shoal.Crawler(FAST, resolver=resolver) as crawler:
            recs = [r async for r in crawler.crawl([url("www", "/")], scope=scope)]
            assert crawler.last_result is not None
            out_of_scope = crawler.last_result.stats.out_of_scope
    followed = ["www", "shop"] if scope == "domain" else ["www"]
    assert sorted(r.url for r in recs) == sorted(url(k, p) for k in followed
                                                 for p in ("/", "/p/1", "/p/2"))
    for key in followed:
        assert page_requests(named[key]) == Counter({"/": 1, "/p/1": 1, "/p/2": 1})
        assert {e.host for e in named[key].log.entries} == {f"{hosts[key]}:{named[key].port}"}
    assert other.log.count() == 0
    assert resolver.asked == {hosts[k] for k in followed}
    assert out_of_scope == (2 if scope == "domain" else 4)  # other.test's / and /p/1 (+shop's)
    if scope == "host":
        assert shop.log.count() == 0


async def test_include_and_exclude_refine_what_is_followed() -> None:
    routes: dict[str, Route] = {
        "/": html_page("home", ["/blog/1", "/private/x", "/shop/1", "/blog/private/2"]),
        "/blog/1": html_page("b1", ["/blog/2", "/shop/2", "/private/y", "/"]),
        "/blog/2": html_page("b2", ["/blog/1"]),
        "/blog/private/2": html_page("bp2"),
        "/shop/1": html_page("s1", ["/shop/2", "/blog/3"]),
        "/shop/2": html_page("s2"),
        "/blog/3": html_page("b3"),
        "/private/x": html_page("px"),
        "/private/y": html_page("py"),
    }
    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/")], exclude=[r"/private/"])
        excluded = page_requests(srv)
    assert Counter(r.url for r in recs) == Counter(
        srv.url(p) for p in ["/", "/blog/1", "/blog/2", "/shop/1", "/shop/2", "/blog/3"])
    assert not any("private" in p for p in excluded)

    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/")], include=[r"/blog/"], exclude=[r"private"])
        included = page_requests(srv)
    # the seed is fetched though it does not match; /shop/* never, so /blog/3 is not found
    assert sorted(r.url for r in recs) == sorted(srv.url(p) for p in ["/", "/blog/1", "/blog/2"])
    assert included == Counter({"/": 1, "/blog/1": 1, "/blog/2": 1})


async def test_robots_txt_is_obeyed_while_crawling() -> None:
    routes: dict[str, Route] = {
        "/robots.txt": robots_txt(shoal_disallow=["/secret/"], star_disallow=["/"]),
        "/": html_page("home", ["/open", "/secret/1"]),
        "/open": html_page("open", ["/secret/2", "/"]),
        "/secret/1": html_page("s1", ["/hidden-behind-secret"]),
        "/secret/2": html_page("s2"),
        "/hidden-behind-secret": html_page("never"),
    }
    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/")])
        requests = srv.log.paths()
    kinds = {r.url.removeprefix(srv.base_url): (r.error_kind, r.status) for r in recs}
    assert kinds == {"/": (None, 200), "/open": (None, 200),
                     "/secret/1": (shoal.ErrorKind.ROBOTS_DISALLOWED, None),
                     "/secret/2": (shoal.ErrorKind.ROBOTS_DISALLOWED, None)}
    assert Counter(requests) == Counter({"/robots.txt": 1, "/": 1, "/open": 1})


# --------------------------------------------------------------------------- 4. link extraction


async def test_which_links_of_a_page_are_followed() -> None:
    head = ('<base href="/sub/dir/">'
            '<link rel="stylesheet" href="/style.css"><link rel="icon" href="/icon.png">'
            '<link rel="next" href="page-2"><link rel="prev" href="/page-0">'
            '<link rel="alternate" href="/alternate">')
    body = ('<a href="rel">relative to base</a>'
            '<a href="/abs">absolute path</a>'
            '<a rel="nofollow" href="/nofollow-1">x</a>'
            '<a rel="external NOFOLLOW noopener" href="/nofollow-2">x</a>'
            '<map name="m"><area href="area-target" shape="rect" coords="0,0,1,1"></map>'
            '<a href="javascript:alert(1)">js</a><a href="JavaScript:void(0)">js</a>'
            '<a href="mailto:someone@example.test">mail</a><a href="tel:+15555550100">tel</a>'
            '<a href="data:text/html,hello">data</a><a href="ftp://127.0.0.1/x">ftp</a>'
            '<a href="#top">fragment</a><a href="">empty</a>'
            '<a href=" /padded ">padded</a>'
            '<a href="/meta-nofollow">page with robots meta</a>'
            '<img src="/img.png"><script src="/script.js"></script>')
    root = (f"<!doctype html><html><head><title>root</title>{head}</head>"
            f"<body>{body}</body></html>")
    meta = ('<!doctype html><html><head><title>m</title>'
            '<meta name="Robots" content="noindex, NOFOLLOW"></head>'
            '<body><a href="/behind-meta">x</a></body></html>')
    leaf = ["/sub/dir/rel", "/abs", "/sub/dir/page-2", "/page-0", "/sub/dir/area-target",
            "/padded"]
    never = ["/style.css", "/icon.png", "/alternate", "/nofollow-1", "/nofollow-2",
             "/behind-meta", "/img.png", "/script.js"]
    routes: dict[str, Route] = {"/": root, "/meta-nofollow": meta}
    routes.update({p: html_page(p) for p in leaf + never})
    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/")])
        requests = page_requests(srv)
    expected = ["/", "/meta-nofollow", *leaf]
    assert requests == Counter(dict.fromkeys(expected, 1))
    assert sorted(r.url for r in recs) == sorted(srv.url(p) for p in expected)
    assert all(r.status == 200 and r.error is None for r in recs)
    root_rec = next(r for r in recs if r.url == srv.url("/"))
    assert root_rec.links == 14  # every <a href>, followed or not
    for path in requests:
        assert not any(s in path.lower() for s in ("javascript", "mailto", "tel:", "data:",
                                                   "ftp", "%20"))


@pytest.mark.parametrize("content", ["none", "NOINDEX, NONE", "noarchive,none", "nofollow",
                                     "noindex nofollow"])
async def test_meta_robots_none_is_nofollow_too(content: str) -> None:
    meta = (f'<!doctype html><html><head><title>m</title><meta name="robots" '
            f'content="{content}"></head><body><a href="/behind">x</a></body></html>')
    async with site({"/": meta, "/behind": html_page("behind")}) as srv:
        recs = await crawl_records([srv.url("/")])
        requests = page_requests(srv)
    assert [r.url for r in recs] == [srv.url("/")]
    assert requests == Counter({"/": 1})


async def test_links_resolve_against_the_final_url_after_redirects() -> None:
    routes: dict[str, Route] = {
        "/": html_page("home", ["/moved"]),
        "/moved": redirect("/new/place/", 301),
        "/new/place/": html_page("place", ["child", "../sibling"]),
        "/new/place/child": html_page("child"),
        "/new/sibling": html_page("sibling"),
    }
    async with site(routes) as srv:
        recs = await crawl_records([srv.url("/")])
        requests = page_requests(srv)
    by_url = {r.url.removeprefix(srv.base_url): r for r in recs}
    assert set(by_url) == {"/", "/moved", "/new/place/child", "/new/sibling"}
    moved = by_url["/moved"]
    assert moved.final_url == srv.url("/new/place/") and moved.redirects == [moved.final_url]
    assert moved.title == "place" and moved.depth == 1
    for path in ("/new/place/child", "/new/sibling"):
        assert by_url[path].parent == srv.url("/moved") and by_url[path].depth == 2
    assert max(requests.values()) == 1 and sum(requests.values()) == 5


# --------------------------------------------------------------------------- 5. max_pages


@pytest.mark.parametrize("max_pages", [1, 7, 50, 299])
async def test_max_pages_is_exact_with_requests_in_flight(max_pages: int) -> None:
    graph = tree_graph(300, seed=21, fanout=(3, 9))
    async with site(graph.routes(delay=(0.0, 0.01))) as srv:
        recs = await crawl_records([srv.url(f"/g/{s}") for s in graph.seeds],
                                   max_pages=max_pages)
        requests = page_requests(srv)
    assert len(recs) == max_pages
    assert len({r.url for r in recs}) == max_pages
    assert sum(requests.values()) == max_pages  # nothing fetched beyond the budget
    assert all(r.status == 200 for r in recs)


async def test_max_pages_counts_the_records_of_invalid_seeds_too() -> None:
    # "--max-pages N: N records in all": an invalid seed's record is one of them, in the
    # first run as in a resumed one
    graph = tree_graph(100, seed=24)
    async with site(graph.routes()) as srv:
        seeds = [*(srv.url(f"/g/{s}") for s in graph.seeds), "not a url", "ftp://x/y"]
        recs = await crawl_records(seeds, max_pages=5)
        requests = page_requests(srv)
    assert len(recs) == 5 and len({r.url for r in recs}) == 5
    kinds = sorted(str(r.error.kind) for r in recs if r.error is not None)
    assert kinds == ["invalid_url", "unsupported_scheme"]
    assert sum(requests.values()) == 3


async def test_max_pages_above_the_reachable_count_gets_everything() -> None:
    graph = tree_graph(120, seed=22)
    async with site(graph.routes()) as srv:
        recs = await crawl_records([srv.url(f"/g/{s}") for s in graph.seeds], max_pages=1000)
        requests = page_requests(srv)
    assert {gid(r.url) for r in recs} == set(range(120)) and len(recs) == 120
    assert sum(requests.values()) == 120


async def test_rerun_with_a_larger_max_pages_continues_to_the_new_total(tmp_path: Path) -> None:
    graph = tree_graph(300, seed=23, fanout=(3, 9))
    state = tmp_path / "s.db"
    async with site(graph.routes()) as srv:
        seeds = [srv.url(f"/g/{s}") for s in graph.seeds]
        runs: list[list[shoal.Record]] = []
        for budget in (40, 100, 100, 1000):
            async with shoal.Crawler(FAST, state=state) as crawler:
                runs.append([r async for r in crawler.crawl(seeds, max_pages=budget)])
        requests = page_requests(srv)
    assert [len(r) for r in runs] == [40, 60, 0, 200]
    everything = [r.url for run in runs for r in run]
    assert len(set(everything)) == len(everything) == 300
    assert requests == Counter({f"/g/{p}": 1 for p in range(300)})
    by_id = {gid(r.url): r.to_dict() for run in runs for r in run}
    depths = graph.depths()
    assert all(rec["depth"] == depths[p] for p, rec in by_id.items())
    check_lineage(graph, by_id)


# --------------------------------------------------------------------------- 6. link traps


def month_index(path: str) -> int:
    _, _, year, month = path.split("/")
    return int(year) * 12 + int(month) - 1


def calendar(srv: Site, *, jumps: Sequence[int]) -> None:
    """An endless calendar: ``/cal/<year>/<month>`` links ``jumps`` months away, forever.

    Routes appear as pages are served, so the site is as infinite as the crawl wants.
    """

    def path_of(index: int) -> str:
        return f"/cal/{index // 12}/{index % 12 + 1}"

    async def month(request: web.Request) -> web.StreamResponse:
        here = month_index(request.path)
        targets = [path_of(here + j) for j in jumps]
        for t in targets:
            srv.routes.setdefault(t, month)
        return web.Response(text=html_page(request.path, targets), content_type="text/html")

    srv.route(path_of(2024 * 12 + 5), month)


async def test_max_depth_contains_an_infinite_calendar() -> None:
    async with site() as srv:
        calendar(srv, jumps=[-1, 1])
        recs = await crawl_records([srv.url("/cal/2024/6")], max_depth=6)
        requests = page_requests(srv)
    seed = 2024 * 12 + 5
    assert sorted(month_index(r.url.removeprefix(srv.base_url)) - seed for r in recs) == list(
        range(-6, 7))
    assert all(r.depth == abs(month_index(r.url.removeprefix(srv.base_url)) - seed)
               for r in recs)
    assert sum(requests.values()) == 13 and max(requests.values()) == 1


async def test_max_pages_per_host_contains_an_infinite_calendar_on_each_host() -> None:
    async with sites(2) as (one, two):
        calendar(one, jumps=[-12, -1, 1, 12])
        calendar(two, jumps=[-12, -1, 1, 12, 24])
        for srv, other in ((one, two), (two, one)):  # each also links to the other host
            srv.route("/", html_page("start", ["/cal/2024/6", other.url("/")]))
        recs = await crawl_records([one.url("/"), two.url("/")], max_pages_per_host=30)
        counts = [sum(page_requests(s).values()) for s in (one, two)]
    hosts = Counter(r.url.split("/")[2] for r in recs)
    assert hosts == {one.netloc: 30, two.netloc: 30}
    assert counts == [30, 30]
    assert len({r.url for r in recs}) == 60


async def test_a_chain_of_links_is_not_paced_by_write_batching() -> None:
    chain = {f"/p/{i}": html_page(f"p{i}", [f"/p/{i + 1}"] if i < 11 else []) for i in range(12)}
    async with site(chain) as srv:
        started = time.monotonic()
        recs = await crawl_records([srv.url("/p/0")])
        elapsed = time.monotonic() - started
    assert len(recs) == 12
    assert elapsed < 1.5, f"12 pages, one link each, took {elapsed:.2f} s"


# --------------------------------------------------------------------------- 7. resume


async def _wait_for_lines(path: Path, n: int, proc: asyncio.subprocess.Process) -> int:
    for _ in range(1500):
        if proc.returncode is not None:
            break
        if path.exists() and (lines := path.read_bytes().count(b"\n")) >= n:
            return lines
        await asyncio.sleep(0.02)
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def test_crawl_killed_with_sigkill_resumes_to_the_same_pages(tmp_path: Path) -> None:
    graph = random_graph(500, seed=77, degree=(3, 8))
    depths = graph.depths()
    assert len(depths) > 400
    out, ref = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    async with site(graph.routes(delay=(0.01, 0.02))) as srv:
        seed = srv.url("/g/0")
        flags = ["-q", "--concurrency", "8", "--per-host", "8"]
        args = ["crawl", seed, "-o", str(out), *flags]
        proc = await asyncio.create_subprocess_exec(
            *shoal_cmd(*args), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        try:
            seen = await _wait_for_lines(out, 100, proc)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == -signal.SIGKILL
        assert 100 <= seen < len(depths)
        before = sum(page_requests(srv).values())
        resumed = await run_shoal(*args)
        assert resumed.code == 0, resumed.stderr
        after = sum(page_requests(srv).values())
        fresh = await run_shoal("crawl", seed, "-o", str(ref), *flags)
        assert fresh.code == 0, fresh.stderr
    recs, ref_recs = read_records(out), read_records(ref)  # every line complete JSON
    urls = Counter(r["url"] for r in recs)
    assert max(urls.values()) == 1  # exactly one record per URL
    assert set(urls) == {r["url"] for r in ref_recs} == {srv.url(f"/g/{p}") for p in depths}
    assert all(r["status"] == 200 and "parent" in r for r in recs)
    # the rerun fetched what had no record, plus what was in flight when killed
    assert after - before <= len(depths) - seen + 8
    by_id = {gid(str(r["url"])): r for r in recs}
    # exact BFS depth is not promised after a kill (nor, see above, without one)
    assert all(rec["depth"] >= depths[p] for p, rec in by_id.items())  # type: ignore[operator]
    check_lineage(graph, by_id)


# --------------------------------------------------------------------------- 8. CLI usage


@pytest.mark.parametrize(("args", "message"), [
    ([], "Missing argument 'SEED...'"),
    (["http://127.0.0.1:9/", "--scope", "bogus"], "--scope"),
    (["http://127.0.0.1:9/", "--include", "("], "--include"),
    (["http://127.0.0.1:9/", "--exclude", "[a-"], "--exclude"),
    (["http://127.0.0.1:9/", "--max-pages", "0"], "--max-pages must be >= 1, got 0"),
    (["http://127.0.0.1:9/", "--max-depth", "-1"], "--max-depth must be >= 0, got -1"),
    (["http://127.0.0.1:9/", "--max-pages-per-host", "0"], "--max-pages-per-host"),
])
async def test_crawl_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str],
                                                      message: str) -> None:
    run = await run_shoal("crawl", *args, "-o", str(tmp_path / "o.jsonl"))
    assert run.code == 2, run.stderr
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert not (tmp_path / "o.jsonl").exists()


async def test_cli_crawl_writes_crawl_records(tmp_path: Path) -> None:
    graph = tree_graph(60, seed=3, roots=1)
    depths = graph.depths()
    out = tmp_path / "out.jsonl"
    async with site(graph.routes()) as srv:
        run = await run_shoal("crawl", srv.url("/g/0"), "-o", str(out), "-q", "--max-depth",
                              "2", "--concurrency", "10", "--per-host", "10")
    assert run.code == 0, run.stderr
    recs = read_records(out)
    assert all(set(r) == RECORD_FIELDS | {"parent"} for r in recs)
    by_id = {gid(str(r["url"])): r for r in recs}
    assert len(by_id) == len(recs)
    assert set(by_id) == {p for p, d in depths.items() if d <= 2}
    assert all(r["depth"] == depths[p] for p, r in by_id.items())
    check_lineage(graph, by_id)


# --------------------------------------------------------------------------- 9. a big crawl


async def test_a_3000_page_crawl_fetches_every_page_once() -> None:
    graph = tree_graph(3000, seed=99, roots=1, fanout=(6, 14), orphans=0)
    config = shoal.Config(concurrency=50, per_host=50, robots=False, timeout=10)
    async with site(graph.routes()) as srv:
        started = time.monotonic()
        recs = await crawl_records([srv.url("/g/0")], config)
        elapsed = time.monotonic() - started
        requests = page_requests(srv)
    assert len(recs) == 3000
    assert {gid(r.url) for r in recs} == set(range(3000))
    assert requests == Counter({f"/g/{p}": 1 for p in range(3000)})
    assert srv.log.count(path_prefix="/robots.txt") == 0
    assert elapsed < 20, f"3,000 pages took {elapsed:.1f} s"
