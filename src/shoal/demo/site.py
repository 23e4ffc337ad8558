"""The bundled demo site: a deterministic generated website served on loopback.

``shoal demo`` serves it and fetches it, so the first command of the README needs no
internet. Besides ordinary pages it has the awkward parts a crawler meets: 404s,
redirects, slow answers, a 500 that succeeds on retry and a robots-disallowed area.

Routes (``n`` is a non-negative integer):

``/``             index linking to the first pages
``/page/{n}``     8-20 KB HTML pages, ``n`` in ``[0, pages)``, 20-30 links each
``/missing/{n}``  404
``/redirect/{n}`` 302 to ``/page/{n % pages}``
``/private/{n}``  disallowed by robots.txt; a polite client never fetches it
``/slow/{n}``     answers after 0.5-1.5 s
``/error/{n}``    500 for the first request, 200 after
``/robots.txt``, ``/sitemap.xml``
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["DEMO_STATE", "DemoState", "demo_urls", "make_app", "serve_demo"]

_VOCABULARY = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
    "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
    "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
    "sunt culpa qui officia deserunt mollit anim id est laborum shoal crawler harbour tide "
    "current reef lantern compass anchor voyage drift channel beacon estuary meridian signal "
    "request response queue worker host lease record sitemap robots fetch polite steady "
    "river stone garden window orchard meadow thunder silver copper amber quiet patient "
    "careful bright distant gentle simple narrow ancient modern swift hollow"
)
_WORDS = _VOCABULARY.split()

_PARAGRAPH_POOL = 256
_SLOW_MIN, _SLOW_SPREAD = 0.5, 1.0
_HTML = "text/html"


@dataclass(slots=True)
class DemoState:
    """What the demo server has seen; tests read ``hits`` to check politeness."""

    hits: Counter[str] = field(default_factory=Counter)  # route kind -> requests
    errors_served: set[int] = field(default_factory=set)  # /error/{n} that already failed once


DEMO_STATE = web.AppKey("shoal_demo_state", DemoState)


class _Generator:
    """Deterministic text for the site: a pool of paragraphs, pages assembled from it."""

    def __init__(self, *, pages: int, seed: int) -> None:
        self.pages = pages
        self.seed = seed
        rng = random.Random(f"shoal-demo:{seed}")
        self.paragraphs = [self._paragraph(rng) for _ in range(_PARAGRAPH_POOL)]
        self.headings = [self._sentence(rng, 2, 5, end="") for _ in range(64)]
        self.cache: dict[int, bytes] = {}  # rendered /page/{n}, bounded by `pages`
        self.sitemaps: dict[str, bytes] = {}  # origin -> sitemap.xml

    @staticmethod
    def _sentence(rng: random.Random, lo: int, hi: int, *, end: str = ".") -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
        return " ".join(words).capitalize() + end

    def _paragraph(self, rng: random.Random) -> str:
        return " ".join(self._sentence(rng, 6, 16) for _ in range(rng.randint(3, 7)))

    def page(self, n: int) -> bytes:
        body = self.cache.get(n)
        if body is None:
            body = self.cache[n] = self.render(f"Demo page {n}", f"page:{n}", n)
        return body

    def render(self, heading: str, key: str, n: int) -> bytes:
        """One 8-20 KB page with 20-30 links, the same every time for the same key."""
        rng = random.Random(f"shoal-demo:{self.seed}:{key}")
        pages = self.pages
        target = rng.randint(8_500, 19_000)
        nav = ["/", f"/page/{(n - 1) % pages}", f"/page/{(n + 1) % pages}"]
        special = [f"/missing/{rng.randrange(pages)}" for _ in range(rng.randint(1, 2))]
        special += [f"/redirect/{rng.randrange(pages)}" for _ in range(rng.randint(1, 2))]
        if n % 10 == 7:
            special.append(f"/private/{n}")
        n_links = rng.randint(20, 30)
        others = [f"/page/{rng.randrange(pages)}" for _ in range(n_links - len(nav) - len(special))]
        inline = special + others[: len(others) // 2]
        rng.shuffle(inline)
        related = others[len(others) // 2 :]

        title = f"{heading} — shoal"
        intro = self.paragraphs[rng.randrange(_PARAGRAPH_POOL)]
        description = intro.split(". ", 1)[0].rstrip(".") + "."
        head = (
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{title}</title>\n"
            f"<meta name=\"description\" content=\"{description}\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "</head>\n<body>\n<header>\n<nav>"
            f"<a href=\"{nav[0]}\">Home</a> | <a href=\"{nav[1]}\">Previous</a> | "
            f"<a href=\"{nav[2]}\">Next</a></nav>\n</header>\n<main>\n<article>\n"
            f"<h1>{heading}</h1>\n<p class=\"lead\">{intro}</p>\n"
        )
        tail_parts = ["<aside>\n<h2>Related pages</h2>\n<ul>\n"]
        tail_parts += [f"<li><a href=\"{href}\">{href}</a></li>\n" for href in related]
        tail_parts.append(
            "</ul>\n</aside>\n</main>\n<footer><p>Generated by the shoal demo site. "
            "Nothing here is real.</p></footer>\n</body>\n</html>\n"
        )
        tail = "".join(tail_parts)

        parts = [head]
        size = len(head) + len(tail)
        section = 0
        while size < target or inline:
            if section == 0 or rng.random() < 0.25:
                section += 1
                closing = "</section>\n" if section > 1 else ""
                heading_html = (
                    f"{closing}<section id=\"s{section}\">\n"
                    f"<h2>{rng.choice(self.headings)}</h2>\n"
                )
                parts.append(heading_html)
                size += len(heading_html)
            text = self.paragraphs[rng.randrange(_PARAGRAPH_POOL)]
            if inline:
                href = inline.pop()
                text += f" See <a href=\"{href}\">{rng.choice(self.headings).lower()}</a>."
            para = f"<p>{text}</p>\n"
            parts.append(para)
            size += len(para)
        parts.append("</section>\n</article>\n")
        parts.append(tail)
        return "".join(parts).encode()

    def sitemap(self, origin: str) -> bytes:
        body = self.sitemaps.get(origin)
        if body is None:
            urls = [f"{origin}/"] + [f"{origin}/page/{n}" for n in range(self.pages)]
            body = (
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n"
                + "".join(f"<url><loc>{u}</loc></url>\n" for u in urls)
                + "</urlset>\n"
            ).encode()
            self.sitemaps[origin] = body
        return body


def _html(body: bytes, *, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_HTML, charset="utf-8")


def _small_page(title: str, text: str) -> bytes:
    return (
        f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title} — shoal</title></head>\n<body><h1>{title}</h1><p>{text}</p>"
        f"<p><a href=\"/\">Home</a></p></body></html>\n"
    ).encode()


def make_app(*, pages: int = 2000, seed: int = 1) -> web.Application:
    """The demo site as an aiohttp application; the same ``pages`` and ``seed`` give the same site.

    Raises:
        ValueError: ``pages`` is below 1.
    """
    if pages < 1:
        raise ValueError(f"pages must be >= 1, got {pages}")
    gen = _Generator(pages=pages, seed=seed)
    state = DemoState()
    app = web.Application()
    app[DEMO_STATE] = state

    def number(request: web.Request) -> int:
        return int(request.match_info["n"])  # the route pattern admits digits only

    async def index(request: web.Request) -> web.Response:
        state.hits["index"] += 1
        links = "".join(
            f"<li><a href=\"/page/{n}\">Demo page {n}</a></li>\n" for n in range(min(pages, 50))
        )
        body = (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Demo site — shoal</title></head>\n<body><h1>shoal demo site</h1>\n"
            f"<p>{pages} generated pages. Start anywhere.</p>\n<ul>\n{links}</ul>\n"
            "<p><a href=\"/sitemap.xml\">Sitemap</a></p></body></html>\n"
        )
        return _html(body.encode())

    async def page(request: web.Request) -> web.Response:
        n = number(request)
        if n >= pages:
            state.hits["missing"] += 1
            raise web.HTTPNotFound(text=f"no page {n}: this site has {pages} pages")
        state.hits["page"] += 1
        return _html(gen.page(n))

    async def missing(request: web.Request) -> web.Response:
        state.hits["missing"] += 1
        body = _small_page("Not found", "This link is broken on purpose.")
        return _html(body, status=404)

    async def redirect(request: web.Request) -> web.Response:
        state.hits["redirect"] += 1
        raise web.HTTPFound(f"/page/{number(request) % pages}")

    async def private(request: web.Request) -> web.Response:
        state.hits["private"] += 1
        n = number(request)
        return _html(gen.render(f"Private page {n}", f"private:{n}", n))

    async def slow(request: web.Request) -> web.Response:
        state.hits["slow"] += 1
        n = number(request)
        delay = _SLOW_MIN + _SLOW_SPREAD * random.Random(f"shoal-demo:{seed}:slow:{n}").random()
        await asyncio.sleep(delay)
        return _html(gen.render(f"Slow page {n}", f"slow:{n}", n))

    async def error(request: web.Request) -> web.Response:
        state.hits["error"] += 1
        n = number(request)
        if n not in state.errors_served:
            state.errors_served.add(n)
            body = _small_page("Server error", "This page fails once; a retry succeeds.")
            return _html(body, status=500)
        return _html(gen.render(f"Recovered page {n}", f"error:{n}", n))

    async def robots(request: web.Request) -> web.Response:
        state.hits["robots"] += 1
        text = (
            "# shoal demo site\n"
            "User-agent: *\n"
            "Disallow: /private/\n"
            "\n"
            f"Sitemap: {request.url.origin()}/sitemap.xml\n"
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def sitemap(request: web.Request) -> web.Response:
        state.hits["sitemap"] += 1
        body = gen.sitemap(str(request.url.origin()))
        return web.Response(body=body, content_type="application/xml", charset="utf-8")

    app.router.add_get("/", index)
    app.router.add_get(r"/page/{n:\d+}", page)
    app.router.add_get(r"/missing/{n:\d+}", missing)
    app.router.add_get(r"/redirect/{n:\d+}", redirect)
    app.router.add_get(r"/private/{n:\d+}", private)
    app.router.add_get(r"/slow/{n:\d+}", slow)
    app.router.add_get(r"/error/{n:\d+}", error)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/sitemap.xml", sitemap)
    return app


def demo_urls(base_url: str, *, count: int = 2000, pages: int = 2000, seed: int = 1) -> list[str]:
    """``count`` input lines for the fetch demo, in a fixed shuffled order.

    Mostly ``/page/n``, with a sprinkle of 404s, redirects, slow pages, fail-once pages and
    robots-disallowed pages, plus one duplicate spelled with a ``#fragment``, one invalid
    line (``not a url``) and one ``mailto:`` line. No comments or blank lines.

    Raises:
        ValueError: ``count`` is below 10 or ``pages`` below 1.
    """
    if count < 10:
        raise ValueError(f"count must be >= 10, got {count}")
    if pages < 1:
        raise ValueError(f"pages must be >= 1, got {pages}")
    base = base_url.rstrip("/")
    rng = random.Random(f"shoal-demo-urls:{seed}")
    per_100 = max(1, count // 100)
    per_200 = max(1, count // 200)
    # Distinct numbers, so the fragment line below is the only duplicate.
    numbers = range(max(pages, per_100))
    special = [f"{base}/missing/{k}" for k in rng.sample(numbers, per_100)]
    special += [f"{base}/redirect/{k}" for k in rng.sample(numbers, per_100)]
    special += [f"{base}/slow/{k}" for k in range(min(per_200, 10))]
    special += [f"{base}/error/{k}" for k in range(per_200)]
    special += [f"{base}/private/{k}" for k in range(per_200)]
    n_pages = count - len(special) - 3
    page_urls = [f"{base}/page/{k % pages}" for k in range(n_pages)]
    odd = [
        f"{page_urls[0]}#top",  # the same URL as page_urls[0] once the fragment is dropped
        "not a url",
        "mailto:demo@example.com",
    ]
    urls = page_urls + special + odd
    rng.shuffle(urls)
    return urls


@asynccontextmanager
async def serve_demo(
    *, host: str = "127.0.0.1", port: int = 0, pages: int = 2000
) -> AsyncIterator[str]:
    """Serve the demo site on ``host``; yields the base URL once it accepts connections."""
    app = make_app(pages=pages)
    # A short shutdown timeout: only /slow/ handlers can be in flight, and none for long.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        netloc = f"[{host}]" if ":" in host else host
        yield f"http://{netloc}:{bound_port}"
    finally:
        await runner.cleanup()
