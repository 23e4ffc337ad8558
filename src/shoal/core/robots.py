"""robots.txt policy by RFC 9309, through protego; pure (no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from protego import Protego

from shoal.errors import FetchError

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; we read no more
MAX_ROBOTS_REDIRECTS = 5  # RFC 9309 2.3.1.2


class RobotsState(enum.Enum):
    """Where a host's robots.txt stands."""

    ALLOW_ALL = "allow_all"  # no robots.txt (4xx) or robots checking off
    RULES = "rules"  # a parsed robots.txt
    DISALLOW_ALL = "disallow_all"  # 5xx or unreachable


@dataclass(slots=True)
class RobotsPolicy:
    """What one host's robots.txt allows for our product token."""

    state: RobotsState
    token: str = "shoal"
    reason: str = ""
    fetch_error: FetchError | None = None  # the host cannot be reached at all (DNS)
    source: tuple[int, bytes] | None = None  # the response it came from (status, body)
    _parser: Protego | None = field(default=None, repr=False)

    @classmethod
    def allow_all(cls, reason: str = "no robots.txt") -> RobotsPolicy:
        return cls(RobotsState.ALLOW_ALL, reason=reason)

    @classmethod
    def disallow_all(cls, reason: str) -> RobotsPolicy:
        return cls(RobotsState.DISALLOW_ALL, reason=reason)

    @classmethod
    def from_response(cls, status: int, body: bytes, *, token: str) -> RobotsPolicy:
        """The policy for a final (non-redirect) robots.txt response, RFC 9309 2.3.1."""
        policy = cls._from_response(status, body, token=token)
        policy.source = (status, bytes(body[:MAX_ROBOTS_BYTES]))
        return policy

    @classmethod
    def _from_response(cls, status: int, body: bytes, *, token: str) -> RobotsPolicy:
        if 200 <= status < 300:
            # utf-8-sig: a leading byte order mark must not hide the first line
            text = body[:MAX_ROBOTS_BYTES].decode("utf-8-sig", errors="replace")
            parser = Protego.parse(text)
            if _disallows_nothing(parser, token):
                policy = cls.allow_all("robots.txt disallows nothing for us")
                policy._parser = parser  # still has the Crawl-delay and Sitemap lines
                return policy
            return cls(RobotsState.RULES, token=token, reason="robots.txt", _parser=parser)
        if 400 <= status < 500:
            return cls.allow_all(f"robots.txt answered {status}")
        if status >= 500:
            return cls.disallow_all(f"robots.txt answered {status}: server error")
        return cls.allow_all(f"robots.txt answered {status}")

    def can_fetch(self, url: str) -> bool:
        if self.state is RobotsState.ALLOW_ALL:
            return True
        if self.state is RobotsState.DISALLOW_ALL:
            return False
        assert self._parser is not None
        if url.endswith("/robots.txt"):
            return True  # RFC 9309 2.2.2: /robots.txt is always allowed
        return bool(self._parser.can_fetch(url, self.token))

    def crawl_delay(self) -> float | None:
        """The Crawl-delay of our group (or ``*``), in seconds, if any."""
        if self._parser is None:
            return None
        delay = self._parser.crawl_delay(self.token)
        return float(delay) if delay is not None else None

    def sitemaps(self) -> list[str]:
        return list(self._parser.sitemaps) if self._parser is not None else []

    def explain(self, url: str) -> str:
        """Why ``url`` is disallowed, for the record's error message."""
        if self.state is RobotsState.DISALLOW_ALL:
            return f"robots.txt disallows all: {self.reason}"
        return f"robots.txt disallows {url} for {self.token}"


def _disallows_nothing(parser: Protego, token: str) -> bool:
    """True when the group that applies to us has no Disallow rule (the common case), so
    URLs need not be matched one by one. Reads protego's rule set; if its shape is not
    what we know, answers False and every URL is checked the normal way."""
    try:
        rules = parser._get_matching_rule_set(token)
        if rules is None:
            return True  # no group for us or for *: everything is allowed
        return all(rule.field != "disallow" for rule in rules._rules)
    except (AttributeError, TypeError):
        return False
