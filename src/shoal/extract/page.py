"""What a route handler is given: one fetched page, with CSS selection and metadata helpers.

A ``Page`` is built only for pages a route matches; its HTML is parsed on first use
(selectolax, lexbor), so a handler that reads only ``page.body`` pays for no parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from selectolax.lexbor import LexborHTMLParser, LexborNode

from shoal.core import urls
from shoal.parse.html import decode_html, split_content_type


@dataclass(frozen=True, slots=True)
class Follow:
    """A link a handler asks the crawl to follow: yield ``page.follow(href)``."""

    url: str  # absolute and normalised


class Page:
    """One fetched page as a route handler sees it.

    ``url`` is the URL of the record, ``final_url`` where its redirects ended (links are
    resolved against it, or against ``<base href>``). ``css``/``css_first`` return
    selectolax nodes: ``node.text()``, ``node.attributes``, ``node.css(...)``.
    """

    __slots__ = ("_base", "_text", "_tree", "body", "depth", "encoding", "final_url",
                 "headers", "status", "url")

    def __init__(self, *, url: str, final_url: str | None = None, status: int = 200,
                 headers: Mapping[str, str] | None = None, body: bytes = b"",
                 depth: int = 0) -> None:
        self.url = url
        self.final_url = final_url or url
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body
        self.depth = depth
        self.encoding: str | None = None
        self._text: str | None = None
        self._tree: LexborHTMLParser | None = None
        self._base: str | None = None

    def __repr__(self) -> str:
        return f"<Page {self.final_url} status={self.status} bytes={len(self.body)}>"

    @property
    def content_type(self) -> str | None:
        """The media type without parameters (``text/html``), or None."""
        return split_content_type(self._header("content-type"))[0]

    def _header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name:
                return v
        return None

    @property
    def text(self) -> str:
        """The body decoded (HTTP charset, BOM, ``<meta charset>``, then detection)."""
        if self._text is None:
            charset = split_content_type(self._header("content-type"))[1]
            self._text, self.encoding = decode_html(self.body, charset)
        return self._text

    @property
    def tree(self) -> LexborHTMLParser:
        """The parsed document (selectolax)."""
        if self._tree is None:
            self._tree = LexborHTMLParser(self.text)
        return self._tree

    def css(self, selector: str) -> list[LexborNode]:
        """Every element matching the CSS ``selector``, in document order."""
        return list(self.tree.css(selector))

    def css_first(self, selector: str) -> LexborNode | None:
        """The first element matching ``selector``, or None."""
        return self.tree.css_first(selector)

    @property
    def base_url(self) -> str:
        """What relative links resolve against: ``<base href>``, else ``final_url``."""
        if self._base is None:
            base = self.final_url
            node = self.tree.css_first("base[href]")
            href = node.attributes.get("href") if node is not None else None
            if href:
                base = urls.join(base, href) or base
            self._base = base
        return self._base

    def urljoin(self, href: str) -> str | None:
        """The absolute, normalised URL of ``href`` on this page; None when it is not a
        followable http(s) link (``javascript:``, ``mailto:``, a fragment, junk)."""
        return urls.join(self.base_url, href)

    def links(self, selector: str = "a[href]") -> list[str]:
        """Absolute URLs of the ``href`` (or ``src``) of the elements ``selector`` matches,
        in document order, duplicates and unfollowable links dropped."""
        out: dict[str, None] = {}
        for node in self.tree.css(selector):
            attrs = node.attributes
            href = attrs.get("href") or attrs.get("src")
            if href and (link := self.urljoin(href)) is not None:
                out[link] = None
        return list(out)

    def follow(self, href: str) -> Follow:
        """A request to crawl ``href`` (relative to this page): yield it from a handler.

        Raises:
            ValueError: ``href`` is not a followable http(s) link.
        """
        link = self.urljoin(href)
        if link is None:
            raise ValueError(f"cannot follow {href!r} from {self.final_url}")
        return Follow(link)

    def jsonld(self) -> list[Any]:
        """The JSON-LD objects of ``<script type="application/ld+json">`` blocks (a top-level
        array or ``@graph`` contributes its members); blocks that are not JSON are skipped."""
        found: list[Any] = []
        for node in self.tree.css("script"):
            kind = (node.attributes.get("type") or "").split(";")[0].strip().lower()
            if kind != "application/ld+json":
                continue
            try:
                data = orjson.loads(node.text(deep=True).strip())
            except orjson.JSONDecodeError:
                continue
            for obj in data if isinstance(data, list) else [data]:
                if isinstance(obj, dict) and isinstance(obj.get("@graph"), list):
                    found.extend(obj["@graph"])
                else:
                    found.append(obj)
        return found

    def opengraph(self) -> dict[str, str]:
        """OpenGraph metadata: ``<meta property="og:title" content=...>`` as
        ``{"title": ...}`` (the first of each property wins)."""
        out: dict[str, str] = {}
        for node in self.tree.css("meta[property]"):
            attrs = node.attributes
            prop = (attrs.get("property") or "").strip()
            content = attrs.get("content")
            if prop.lower().startswith("og:") and content is not None:
                out.setdefault(prop[3:], content)
        return out
