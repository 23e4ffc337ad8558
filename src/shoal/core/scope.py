"""Which discovered links a crawl follows: host, registrable domain or anything, refined by
include/exclude patterns. Pure: the public suffix list ships with the package (offline)."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from shoal.core import urls
from shoal.errors import ConfigError


class ScopeMode(enum.StrEnum):
    HOST = "host"  # the seed's host name and explicit port (http and https both count)
    DOMAIN = "domain"  # the seed's registrable domain (example.co.uk), per the PSL
    ANY = "any"


@lru_cache(maxsize=1)
def _psl() -> object:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@lru_cache(maxsize=65536)
def registrable_domain(host: str) -> str:
    """``www.example.co.uk`` -> ``example.co.uk``; an IP address or a bare name is itself."""
    h = host.strip("[]").rstrip(".")
    try:
        ipaddress.ip_address(h)
        return h
    except ValueError:
        pass
    found = _psl().privatesuffix(h)  # type: ignore[attr-defined]
    return str(found) if found else h


def compile_patterns(patterns: Iterable[str], flag: str) -> tuple[re.Pattern[str], ...]:
    """Compile user regexes; a bad one is a ConfigError naming the flag and the pattern."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise ConfigError(f"{flag} {p!r} is not a valid regular expression: {exc}") from exc
    return tuple(out)


class Scope:
    """Decides whether a normalised URL found while crawling is followed."""

    def __init__(self, seeds: Sequence[str], mode: ScopeMode | str = ScopeMode.HOST, *,
                 include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.mode = ScopeMode(mode)
        self._include = compile_patterns(include, "--include")
        self._exclude = compile_patterns(exclude, "--exclude")
        self._hosts = {_site(s) for s in seeds}
        self._domains = {registrable_domain(urls.hostname(s)) for s in seeds}

    def add_seed(self, url: str) -> None:
        """Where a seed redirected to is in scope too."""
        self._hosts.add(_site(url))
        self._domains.add(registrable_domain(urls.hostname(url)))

    def allows(self, url: str) -> bool:
        if self.mode is ScopeMode.HOST and _site(url) not in self._hosts:
            return False
        if (self.mode is ScopeMode.DOMAIN
                and registrable_domain(urls.hostname(url)) not in self._domains):
            return False
        if self._include and not any(p.search(url) for p in self._include):
            return False
        return not any(p.search(url) for p in self._exclude)


def _site(url: str) -> str:
    """``host[:port]`` of a normalised URL: the scheme does not matter, a port does (the
    normaliser has already dropped default ports)."""
    authority = urls.host_key(url).partition("://")[2]
    return authority.rpartition("@")[2]
