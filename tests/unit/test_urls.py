"""URL normalisation, host keys and link resolution (shoal.core.urls)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from urllib.parse import urljoin

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from shoal.core.urls import _fast, _slow, host_key, hostname, join, normalize, robots_url
from shoal.errors import ErrorKind, FetchError

# --- strategies -------------------------------------------------------------------------

UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
SAFE_PATH = UNRESERVED + "!$&'()*+,;=:@"  # allowed unencoded in a path segment
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
# a registered name: its last label is not a number (WHATWG reads "a.10" as an IPv4 address)
ASCII_HOST = st.lists(LABEL, min_size=1, max_size=3).map(".".join).filter(
    lambda h: not h.rsplit(".", 1)[-1].isdigit() and "0x" not in h)
OTHER_HOST = st.sampled_from(
    [
        "bücher.example",
        "münchen.de",
        "例え.jp",
        "xn--bcher-kva.example",
        "ß.de",
        "☃.net",
        "127.0.0.1",
        "10.1.2.3",
        "a.b.",
        "under_score.example",
        "[::1]",
        "[2001:DB8::1]",
        "[::ffff:1.2.3.4]",
    ]
)
HOSTS = st.one_of(ASCII_HOST, OTHER_HOST)
# Everything but "/?#", controls, surrogates and whitespace (stripped at the ends).
SEG_CHARS = st.characters(
    codec="utf-8", exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"], exclude_characters="/?#"
)
SEGMENTS = st.one_of(
    st.sampled_from(
        [
            ".",
            "..",
            "%2e",
            "%2E%2e",
            "%2F",
            "%2f",
            "%7e",
            "%7E",
            "~",
            "%41",
            "a%20b",
            "a b",
            "ä",
            "%zz",
            "%",
            "%3b",
            ";",
            "=",
            "@",
            ":",
            "%3A",
            "%25",
            "%e4%bd%a0",
            "A",
            "Zz",
            "",
            "[x]",
            "\\",
            "+",
            "%2B",
        ]
    ),
    st.text(SEG_CHARS, max_size=6),
)
QUERY_TEXT = st.one_of(
    st.sampled_from(["a", "B", "%3D", "%26", "%3d", "+", "%2B", " ", "?", "/", "%7e", "é", "%"]),
    st.text(SEG_CHARS, max_size=5),
)


def flip_case(text: str, flips: list[bool]) -> str:
    """Upper-case the ASCII characters where ``flips`` says so ("ß".upper() is "SS")."""
    return "".join(
        c.upper() if flip and c.isascii() else c for c, flip in zip(text, flips, strict=False)
    )


@st.composite
def urls(draw: st.DrawFn) -> str:
    """Absolute http(s) URLs in many spellings: case, ports, escapes, dots, queries."""
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https"]))
    host = draw(HOSTS)
    host = flip_case(host, draw(st.lists(st.booleans(), min_size=len(host))))
    port = draw(
        st.sampled_from(["", ":80", ":443", ":8080", ":0080"])
        | st.integers(1, 65535).map(lambda p: f":{p}")
    )
    user = draw(st.sampled_from(["", "", "", "user@", "u%3a:p%40ss@"]))
    path = "/" + "/".join(draw(st.lists(SEGMENTS, max_size=5)))
    if path == "/" and draw(st.booleans()):
        path = ""
    query = draw(st.none() | st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=3))
    qs = "" if query is None else "?" + "&".join(f"{k}={v}" for k, v in query)
    fragment = draw(st.sampled_from(["", "", "#", "#frag", "#a/b?c"]))
    return f"{scheme}://{user}{host}{port}{path}{qs}{fragment}"


@st.composite
def canonical(draw: st.DrawFn) -> tuple[str, str, list[str], str]:
    """(scheme, host, segments, query) of a URL already in canonical form."""
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(ASCII_HOST)
    segs = draw(
        st.lists(
            st.text(SAFE_PATH, min_size=1, max_size=6).filter(lambda s: s not in (".", "..")),
            max_size=4,
        )
    )
    query = draw(st.sampled_from(["", "?q=A", "?b=2&a=1", "?x=%3D%26&y=A%20b", "?a=/?:@"]))
    return scheme, host, segs, query


def normalizes(url: str) -> bool:
    try:
        normalize(url)
    except FetchError:
        return False
    return True


# --- normalize: examples ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/", "http://example.com/"),
        ("  http://example.com/x \n", "http://example.com/x"),
        ("HTTP://Example.COM/Path", "http://example.com/Path"),
        ("HtTpS://WWW.Example.org", "https://www.example.org/"),
        ("http://Bücher.example/", "http://xn--bcher-kva.example/"),
        ("http://BÜCHER.example/", "http://xn--bcher-kva.example/"),
        ("http://xn--BCHER-kva.example/", "http://xn--bcher-kva.example/"),
        ("http://ｅｘａｍｐｌｅ.com/", "http://example.com/"),
        ("http://[2001:DB8:0:0::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        ("http://[::1]/", "http://[::1]/"),
        ("http://a.example./x", "http://a.example./x"),
        ("http://127.0.0.5:8080/page/1234?x=1", "http://127.0.0.5:8080/page/1234?x=1"),
        ("http://a.example:80/", "http://a.example/"),
        ("https://a.example:443/", "https://a.example/"),
        ("http://a.example:443/", "http://a.example:443/"),
        ("https://a.example:80/", "https://a.example:80/"),
        ("http://a.example:0080/", "http://a.example/"),
        ("http://a.example:/x", "http://a.example/x"),
        ("http://a.example/x#frag", "http://a.example/x"),
        ("http://a.example/x?q=1#frag?x", "http://a.example/x?q=1"),
        ("http://a.example/#", "http://a.example/"),
        ("http://a.example", "http://a.example/"),
        ("http://a.example?q", "http://a.example/?q"),
        ("http://a.example/a/./b/../c", "http://a.example/a/c"),
        ("http://a.example/../../x", "http://a.example/x"),
        ("http://a.example/a/b/..", "http://a.example/a/"),
        ("http://a.example/a/b/.", "http://a.example/a/b/"),
        ("http://a.example/a/%2e%2E/b", "http://a.example/b"),
        ("http://a.example/a//b", "http://a.example/a//b"),
        ("http://a.example/.well-known/x", "http://a.example/.well-known/x"),
        ("http://a.example/%7e%7E%41%2d%5f%2e", "http://a.example/~~A-_."),
        ("http://a.example/%2f%3a%40%3b%3d%2c", "http://a.example/%2F%3A%40%3B%3D%2C"),
        ("http://a.example/a%2Fb", "http://a.example/a%2Fb"),
        ("http://a.example/?k=%3d%26%2b&x=%3D", "http://a.example/?k=%3D%26%2B&x=%3D"),
        ("http://a.example/?a=1&b=2&a=0", "http://a.example/?a=1&b=2&a=0"),
        ("http://a.example/?b=2&a=1", "http://a.example/?b=2&a=1"),
        ("http://a.example/?Q=Aa", "http://a.example/?Q=Aa"),
        ("http://a.example/?", "http://a.example/"),
        ("http://a.example/a b?c d", "http://a.example/a%20b?c%20d"),
        ("http://a.example/a+b?c+d", "http://a.example/a+b?c+d"),
        ("http://a.example/ä?ö=ü", "http://a.example/%C3%A4?%C3%B6=%C3%BC"),
        ("http://a.example/%e4%bd%a0", "http://a.example/%E4%BD%A0"),
        ("http://a.example/😀", "http://a.example/%F0%9F%98%80"),
        ("http://a.example/%", "http://a.example/%25"),
        ("http://a.example/%zz%4", "http://a.example/%25zz%254"),
        ('http://a.example/[x]{y}|"<>^`', "http://a.example/%5Bx%5D%7By%7D%7C%22%3C%3E%5E%60"),
        # as browsers read http(s) URLs (WHATWG): backslashes before the query are slashes,
        # hosts are percent-decoded, and a host ending in a number is an IPv4 address
        ("http://a\\b/c", "http://a/b/c"),
        ("http:\\\\a.example\\b\\..\\c?d=\\e", "http://a.example/c?d=%5Ce"),
        ("http://%41.com/", "http://a.com/"),
        ("http://b%C3%BCcher.example/", "http://xn--bcher-kva.example/"),
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://0x7f.0.0.1/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0x7F000001:80/", "http://127.0.0.1/"),
        ("http://10.0.0.010/", "http://10.0.0.8/"),
        ("http://127.0.0.1./", "http://127.0.0.1/"),
        ("http://0/", "http://0.0.0.0/"),
        ("http://a.example/?x=[1]", "http://a.example/?x=%5B1%5D"),
        ("http://a.example/~x!$&'()*+,;=:@", "http://a.example/~x!$&'()*+,;=:@"),
        ("http://User:P%40ss@Host.example/", "http://User:P%40ss@host.example/"),
        ("http://a@b@host.example/", "http://a%40b@host.example/"),
        ("http://@host.example/", "http://host.example/"),
    ],
)
def test_normalize(url: str, expected: str) -> None:
    assert normalize(url) == expected
    assert normalize(expected) == expected


@pytest.mark.parametrize("path", ["/CaseKept/MiXeD", "/A%2Fb/C", "/ABC?QUERY=Value"])
def test_path_and_query_case_kept(path: str) -> None:
    assert normalize("HTTP://EXAMPLE.COM" + path) == "http://example.com" + path


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("ftp://a.example/", "ftp"),
        ("mailto:x@y.example", "mailto"),
        ("javascript:alert(1)", "javascript"),
        ("data:text/html,hi", "data"),
        ("file:///etc/passwd", "file"),
        ("tel:+123", "tel"),
        ("FTP://a/", "ftp"),
        ("ws://a.example/", "ws"),
    ],
)
def test_unsupported_scheme(url: str, scheme: str) -> None:
    with pytest.raises(FetchError) as info:
        normalize(url)
    assert info.value.kind is ErrorKind.UNSUPPORTED_SCHEME
    assert info.value.message == f"unsupported scheme {scheme!r} in {url}"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty URL"),
        ("   ", "empty URL"),
        ("example.com/x", "missing scheme"),
        ("localhost:8080/x", "missing scheme"),
        ("/just/a/path", "missing scheme"),
        ("http:example.com", "missing '//' after 'http:'"),
        ("http://", "empty host"),
        ("http:///path", "empty host"),
        ("http://:80/", "empty host"),
        ("http://a:99999/", "port 99999 out of range"),
        ("http://a:0/", "port 0 out of range"),
        ("http://a:" + "9" * 5000 + "/", "port 99999999… out of range"),
        ("http://a:x/", "invalid port 'x'"),
        ("http://a:8:8/", "invalid port '8:8'"),
        ("http://a:٨٠/", "invalid port"),
        ("http://ex ample.com/", "invalid character ' ' in host"),
        ("http://%zz.com/", "invalid character '%' in host"),
        ("http://%ff.com/", "invalid percent-encoding in host"),
        ("http://1.2.3.4.5/", "IPv4 address with more than four parts"),
        ("http://256.0.0.1/", "IPv4 address '256.0.0.1' out of range"),
        ("http://4294967296/", "IPv4 address '4294967296' out of range"),
        ("http://a.0x1f/", "invalid IPv4 address 'a.0x1f'"),
        ("http://0x100000000/", "IPv4 address '0x100000000' out of range"),
        ("http://a..b/", "empty label in host"),
        ("http://.a/", "empty label in host"),
        ("http://" + "a" * 64 + ".com/", "host label longer than 63"),
        ("http://" + "a." * 127 + "com/", "host longer than 253"),
        ("http://xn--a.com/", "invalid punycode in host"),
        ("http://ü..b/", "invalid internationalised host name"),
        ("http://e\u200bvil.com/", "invalid internationalised host name"),
        ("http://[::1/", "unterminated IPv6 address"),
        ("http://[::1]x/", "unexpected characters after IPv6 address"),
        ("http://[zz]/", "invalid IPv6 address 'zz'"),
        ("http://[fe80::1%25eth0]/", "IPv6 zone identifiers are not supported"),
        ("http://a.example/b\tc", "control character U+0009 at position 18"),
        ("http://a.example/\x00", "control character U+0000"),
        ("http://a.example/\x7f", "control character U+007F"),
        ("http://a.example/\ud800", "lone surrogate"),
    ],
)
def test_invalid(url: str, reason: str) -> None:
    with pytest.raises(FetchError) as info:
        normalize(url)
    assert info.value.kind is ErrorKind.INVALID_URL
    assert info.value.message.startswith(reason)


def test_invalid_message_is_clipped_and_printable() -> None:
    url = "http://a\x01b/" + "x" * 500 + "\ud800"
    with pytest.raises(FetchError) as info:
        normalize(url)
    message = info.value.message
    assert message.endswith("…")
    assert "\\u0001" in message
    assert len(message) < 300
    message.encode("utf-8")  # no lone surrogate: records are JSON


def test_fast_path_taken_for_canonical_urls() -> None:
    for url in ["http://127.0.0.5:8080/page/1234?x=1", "https://example.org/a/b;c=d?e=f/g"]:
        assert _fast(url) == url
    assert _fast("http://example.org") == "http://example.org/"
    assert _fast("http://example.org?q=1") == "http://example.org/?q=1"
    for url in [
        "https://Example.COM/",
        "http://a:80/",
        "https://a:443/",
        "http://a/%7e",
        "http://a/./b",
        "http://a/#x",
        "HTTP://a/",
        "http://xn--a.com/",
        "http://a/?",
        "http://a:0080/",
        "http://a/ä",
    ]:
        assert _fast(url) is None


# --- normalize: properties --------------------------------------------------------------


@settings(max_examples=500)
@given(urls())
@example("http://a.example/%2e%2e%2f")
@example("http://a.example/%252e")
def test_idempotent(url: str) -> None:
    try:
        once = normalize(url)
    except FetchError as exc:
        assert exc.kind is ErrorKind.INVALID_URL
        return
    assert normalize(once) == once
    assert once == once.strip()
    assert "#" not in once
    assert once.startswith(("http://", "https://"))
    assert once.isascii()


@settings(max_examples=500)
@given(st.one_of(urls(), canonical().map(lambda c: f"{c[0]}://{c[1]}/{'/'.join(c[2])}{c[3]}")))
def test_fast_path_agrees_with_slow_path(url: str) -> None:
    url = url.strip()
    fast = _fast(url)
    if fast is None:
        return
    assert fast == _slow(url)


@settings(max_examples=300)
@given(canonical(), st.data())
def test_equivalent_spellings_share_one_key(
    parts: tuple[str, str, list[str], str], data: st.DataObject
) -> None:
    scheme, host, segs, query = parts
    key = f"{scheme}://{host}/{'/'.join(segs)}{query}"
    assert normalize(key) == key

    flips = st.lists(st.booleans(), min_size=20, max_size=20)
    spelled_scheme = flip_case(scheme, data.draw(flips))
    spelled_host = flip_case(host, data.draw(st.lists(st.booleans(), min_size=len(host))))
    port = data.draw(st.sampled_from(["", ":", {"http": ":80", "https": ":443"}[scheme]]))
    spelled: list[str] = []
    for seg in segs:
        dots = data.draw(st.sampled_from(["", "./", "x/../", "%2E/", "y/%2e%2E/"]))
        escaped = "".join(
            f"%{ord(c):02{'x' if data.draw(st.booleans()) else 'X'}}"
            if c in UNRESERVED and data.draw(st.booleans())
            else c
            for c in seg
        )
        spelled.append(dots + escaped)
    fragment = data.draw(st.sampled_from(["", "#", "#top", "#a?b/c"]))
    variant = f"{spelled_scheme}://{spelled_host}{port}/{'/'.join(spelled)}{query}{fragment}"
    assert normalize(variant) == key


@given(st.text(st.sampled_from("abcXYZ0/"), min_size=1, max_size=12))
def test_path_case_kept(path: str) -> None:
    for tail in ("", "#frag"):  # fast and slow path
        assert normalize(f"http://Example.com/{path}{tail}") == f"http://example.com/{path}"
    if path.upper() != path.lower():
        assert normalize(f"http://a.b/{path.upper()}") != normalize(f"http://a.b/{path.lower()}")


JUNK = st.one_of(
    st.text(),
    st.text(st.characters(exclude_categories=())),  # with surrogates
    st.tuples(
        st.sampled_from(
            [
                "http://",
                "HTTPS://",
                "http:",
                "http://[",
                "http://a:",
                "http://a@",
                "http://[::1]",
                "mailto:",
                "",
                "//",
                "http://ü",
                "http://xn--",
            ]
        ),
        st.text(st.characters(exclude_categories=())),
    ).map("".join),
)


@settings(max_examples=1000)
@given(JUNK)
def test_junk_is_invalid_not_a_crash(text: str) -> None:
    try:
        result = normalize(text)
    except FetchError as exc:
        assert exc.kind in (ErrorKind.INVALID_URL, ErrorKind.UNSUPPORTED_SCHEME)
        assert exc.message
        exc.message.encode("utf-8")
    else:
        assert normalize(result) == result


def test_huge_url() -> None:
    url = "http://a.example/" + "%7e" * 200_000
    assert normalize(url) == "http://a.example/" + "~" * 200_000


# --- host_key, robots_url, hostname -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key", "host"),
    [
        ("http://127.0.0.2:8080/a?b", "http://127.0.0.2:8080", "127.0.0.2"),
        ("https://example.org/", "https://example.org", "example.org"),
        ("http://user:pw@example.org:81/x", "http://example.org:81", "example.org"),
        ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080", "2001:db8::1"),
        ("http://[::1]/", "http://[::1]", "::1"),
        (
            "http://xn--bcher-kva.example/?a=//b@c",
            "http://xn--bcher-kva.example",
            "xn--bcher-kva.example",
        ),
    ],
)
def test_host_key_robots_url_hostname(url: str, key: str, host: str) -> None:
    assert normalize(url) == url
    assert host_key(url) == key
    assert robots_url(url) == key + "/robots.txt"
    assert hostname(url) == host


@given(urls())
def test_host_key_is_a_prefix_without_userinfo(url: str) -> None:
    assume(normalizes(url))
    key = normalize(url)
    assert normalize(host_key(key)) == host_key(key) + "/"
    assert host_key(key) == host_key(normalize(key.replace("://", "://u:p@", 1)))
    assert hostname(key) in host_key(key)


# --- join -------------------------------------------------------------------------------

BASE = "http://127.0.0.5:8080/dir/page?x=1"


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/abs/path", "http://127.0.0.5:8080/abs/path"),
        ("rel/path", "http://127.0.0.5:8080/dir/rel/path"),
        ("../up", "http://127.0.0.5:8080/up"),
        ("../../../up", "http://127.0.0.5:8080/up"),
        ("./", "http://127.0.0.5:8080/dir/"),
        (".", "http://127.0.0.5:8080/dir/"),
        ("..", "http://127.0.0.5:8080/"),
        ("?y=2", "http://127.0.0.5:8080/dir/page?y=2"),
        ("rel#frag", "http://127.0.0.5:8080/dir/rel"),
        ("  /spaced  ", "http://127.0.0.5:8080/spaced"),
        ("/split\n/line", "http://127.0.0.5:8080/split/line"),
        ("//Other.example/x", "http://other.example/x"),
        ("HTTPS://Other.example:443/a/../b#c", "https://other.example/b"),
        ("http://other.example", "http://other.example/"),
        ("a b/%7e", "http://127.0.0.5:8080/dir/a%20b/~"),
        ("1a:b", "http://127.0.0.5:8080/dir/1a:b"),
        (";x", "http://127.0.0.5:8080/dir/;x"),
        ("./;", "http://127.0.0.5:8080/dir/;"),
        ("a/%2e/..", "http://127.0.0.5:8080/dir/"),
        ("", None),
        ("   ", None),
        ("#top", None),
        ("#", None),
        ("javascript:void(0)", None),
        ("JavaScript:void(0)", None),
        ("mailto:a@b.example", None),
        ("tel:+123", None),
        ("data:text/plain,x", None),
        ("ftp://a.example/", None),
        ("page:2", None),
        ("http:relative", None),
        ("http://", None),
        ("http://[::1/", None),
        ("//", None),
        ("/\x00", None),
        ("\\\\Other.example\\x", "http://other.example/x"),
        ("..\\up\\x?q=\\", "http://127.0.0.5:8080/up/x?q=%5C"),
        ("//127.1/", "http://127.0.0.1/"),
    ],
)
def test_join(href: str, expected: str | None) -> None:
    assert join(BASE, href) == expected


def test_join_from_host_root() -> None:
    assert join("https://a.example/", "x") == "https://a.example/x"
    assert join("https://a.example/d/", "x") == "https://a.example/d/x"


@st.composite
def bases(draw: st.DrawFn) -> str:
    url = draw(urls())
    assume(normalizes(url))
    return normalize(url)


@settings(max_examples=300)
@given(st.one_of(bases(), st.text()), JUNK)
def test_join_never_raises(base: str, href: str) -> None:
    result = join(base, href)
    assert result is None or normalize(result) == result


# The oracle: urllib's RFC 3986 resolver then normalize. urljoin drops empty path segments,
# accepts "http:rel" and mangles ";params" (RFC 2396: "./;" gives "/"), so the shapes
# below avoid "//" inside paths, scheme-only hrefs and ";". urljoin also takes "%2e" for a
# plain segment, where RFC 3986 6.2.2.2 and browsers take it for ".": decode it first.
REL_SEG = st.one_of(
    st.sampled_from([".", "..", "%2e", "a", "B", "%7e", "a%2Fb", "ä", "x y", "p=1", "%"]),
    st.text(SEG_CHARS.filter(lambda c: c != ":"), min_size=1, max_size=5),
)
REL_PATH = st.lists(REL_SEG, min_size=1, max_size=4).map("/".join)
HREFS = (
    st.tuples(
        st.one_of(
            REL_PATH,
            REL_PATH.map(lambda p: "/" + p),
            st.tuples(HOSTS, REL_PATH).map(lambda t: f"//{t[0]}/{t[1]}"),
            st.tuples(st.sampled_from(["http", "HTTPS"]), HOSTS, REL_PATH).map(
                lambda t: f"{t[0]}://{t[1]}/{t[2]}"
            ),
            st.just(""),
        ),
        st.sampled_from(["", "?q=1", "?a=%3D&b", "?x y"]),
        st.sampled_from(["", "#f"]),
    )
    .map("".join)
    .filter(lambda h: h.strip() == h and h[:1] not in ("", "?", "#") and ";" not in h)
)
ORACLE_BASES = st.tuples(
    st.sampled_from(["http", "https"]),
    HOSTS,
    st.sampled_from(["", ":8080"]),
    st.lists(st.text(SAFE_PATH, min_size=1, max_size=4), max_size=3).map("/".join),
    st.sampled_from(["", "/", "?p=1", "/?p=1"]),
).map(lambda t: f"{t[0]}://{t[1]}{t[2]}/{t[3]}{t[4]}")


@settings(max_examples=300)
@given(ORACLE_BASES, HREFS)
@example("http://a.example/d/p", "../x")
@example("http://a.example/", "?q")
@example("http://a.example/", "a/%2e/..")
def test_join_matches_rfc3986_resolution(base: str, href: str) -> None:
    assume(normalizes(base))
    assume("\\" not in href)  # read as "/" by browsers (WHATWG), not by RFC 3986
    base = normalize(base)
    assume("//" not in base.partition("://")[2])
    try:
        dotted = href.replace("%2e", ".").replace("%2E", ".")
        expected: str | None = normalize(urljoin(base, dotted))
    except (FetchError, ValueError):
        expected = None
    assert join(base, href) == expected


# --- purity ------------------------------------------------------------------------------


def test_imports_without_aiohttp() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("aiohttp", "asyncio"):
                    raise ImportError(f"blocked import of {name}")
                return None

        sys.meta_path.insert(0, Blocker())
        import shoal.core.urls as urls
        assert urls.normalize("HTTP://A.example:80/") == "http://a.example/"
        assert "aiohttp" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
