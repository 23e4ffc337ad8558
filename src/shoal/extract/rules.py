"""Extraction without Python: ``--extract name=selector[@attr]`` and ``--extract-jsonld``.

The rules make one handler for every page: one item per page with ``url`` and a field per
rule (the text of the first element the selector matches, whitespace collapsed, or its
attribute with ``@attr``; null when nothing matches), plus ``jsonld`` (the page's JSON-LD
objects) with ``--extract-jsonld``. A page where every field is null gives no item.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selectolax.lexbor import LexborHTMLParser

from shoal.errors import UsageError
from shoal.extract.page import Page
from shoal.parse.html import looks_like_html

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,99}")
_ATTR = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*")
_WS = re.compile(r"\s+")
_PROBE = LexborHTMLParser("<p></p>")


@dataclass(frozen=True, slots=True)
class Rule:
    """One field of the item: ``name`` from ``selector`` (text, or ``attr``)."""

    name: str
    selector: str
    attr: str | None = None


def parse_rule(spec: str) -> Rule:
    """``name=selector`` or ``name=selector@attr``.

    Raises:
        UsageError: naming the flag and what is wrong.
    """
    name, eq, selector = spec.partition("=")
    name, selector = name.strip(), selector.strip()
    if not eq or not selector:
        raise UsageError(f"--extract {spec!r}: expected NAME=SELECTOR or NAME=SELECTOR@ATTR")
    if not _NAME.fullmatch(name):
        raise UsageError(f"--extract {spec!r}: the name must be letters, digits, _ . - "
                         "(starting with a letter or _)")
    attr = None
    head, at, tail = selector.rpartition("@")
    if at and head.strip() and _ATTR.fullmatch(tail.strip()):
        selector, attr = head.strip(), tail.strip()
    try:
        _PROBE.css_first(selector)
    except Exception as exc:  # selectolax raises SelectolaxError (an Exception)
        raise UsageError(f"--extract {spec!r}: {selector!r} is not a CSS selector ({exc})"
                         ) from exc
    return Rule(name, selector, attr)


def parse_rules(specs: Sequence[str], *, jsonld: bool = False) -> list[Rule]:
    """Every ``--extract`` rule, checked: names unique, ``url``/``jsonld`` reserved."""
    rules = [parse_rule(s) for s in specs]
    names = [r.name for r in rules]
    for reserved in ("url", "jsonld"):
        if reserved in names:
            raise UsageError(f"--extract {reserved}=...: '{reserved}' is a field shoal fills "
                             "itself; choose another name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"--extract: the field name {dupes[0]!r} is given twice")
    return rules


class RuleHandler:
    """The handler the rules make (plain and picklable; runs on the loop: it is quick)."""

    def __init__(self, rules: Sequence[Rule], *, jsonld: bool = False) -> None:
        self.rules = list(rules)
        self.jsonld = jsonld
        self.__qualname__ = "--extract"

    def __call__(self, page: Page) -> list[dict[str, Any]]:
        if not looks_like_html(page.content_type, page.body):
            return []
        item: dict[str, Any] = {"url": page.url}
        found = False
        for rule in self.rules:
            node = page.css_first(rule.selector)
            value: str | None = None
            if node is not None:
                if rule.attr is None:
                    value = _WS.sub(" ", node.text(deep=True)).strip()
                else:
                    value = node.attributes.get(rule.attr)
            found = found or value is not None
            item[rule.name] = value
        if self.jsonld:
            objects = page.jsonld()
            found = found or bool(objects)
            item["jsonld"] = objects
        return [item] if found else []
