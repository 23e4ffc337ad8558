"""shoal.Page: selection, links, JSON-LD, OpenGraph and follow on fixed documents."""

from __future__ import annotations

import pytest

import shoal

DOC = """<!doctype html><html><head>
<meta charset="windows-1252"><title>Caf\xe9</title>
<base href="/shop/">
<meta property="og:title" content="OG title"><meta property="og:title" content="second">
<meta property="og:image" content="/img.png"><meta name="description" content="d">
<script type="application/ld+json">{"@type": "Product", "name": "A"}</script>
<script type="application/ld+json">[{"@type": "Offer"}, {"@graph": [{"@id": "x"}]}]</script>
<script type="application/ld+json">{not json</script>
<script type="text/javascript">var x = 1;</script>
</head><body>
<h1>  Caf\xe9 cr\xe8me </h1><p class="price" data-cur="EUR">3.50</p>
<a href="item/1">one</a><a href="/abs">abs</a><a href="item/1#frag">again</a>
<a href="mailto:x@y">mail</a><a href="javascript:void(0)">js</a><img src="pic.png">
</body></html>"""


def make(body: bytes, headers: dict[str, str] | None = None) -> shoal.Page:
    return shoal.Page(url="http://a.test/start", final_url="http://a.test/cat/list?p=1",
                      headers=headers or {"Content-Type": "text/html"}, body=body)


def test_selection_text_and_links() -> None:
    page = make(DOC.encode("cp1252"))
    assert page.text.startswith("<!doctype") and "Café crème" in page.text
    assert page.encoding == "cp1252"
    h1 = page.css_first("h1")
    assert h1 is not None and h1.text(strip=True) == "Café crème"
    price = page.css_first(".price")
    assert price is not None and price.attributes["data-cur"] == "EUR"
    assert page.css_first(".missing") is None
    assert [n.text() for n in page.css("a")][:2] == ["one", "abs"]
    assert page.base_url == "http://a.test/shop/"
    assert page.links() == ["http://a.test/shop/item/1", "http://a.test/abs"]
    assert page.links("img") == ["http://a.test/shop/pic.png"]
    assert page.follow("../x?b=1") == shoal.Follow("http://a.test/x?b=1")
    with pytest.raises(ValueError, match="cannot follow"):
        page.follow("mailto:someone@example.org")
    assert page.content_type == "text/html"


def test_jsonld_and_opengraph() -> None:
    page = make(DOC.encode("cp1252"))
    assert page.jsonld() == [{"@type": "Product", "name": "A"}, {"@type": "Offer"},
                             {"@id": "x"}]
    assert page.opengraph() == {"title": "OG title", "image": "/img.png"}


def test_http_charset_wins_and_a_page_without_html_is_fine() -> None:
    page = make("<p>é</p>".encode("latin-1"),
                {"content-type": "text/html; charset=ISO-8859-1"})
    assert page.css_first("p").text() == "é"  # type: ignore[union-attr]
    empty = make(b"")
    assert empty.css("a") == [] and empty.links() == [] and empty.jsonld() == []
    assert empty.opengraph() == {}
