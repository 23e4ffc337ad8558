"""The Prometheus text exposition of a registry, byte for byte as prometheus_client's
``generate_latest`` writes it, with each series' name and labels formatted once.

``generate_latest`` checks and escapes every label name and value of every sample on
every scrape. With the API's request-latency histogram (18 lines per route and status)
that was most of the cost of ``GET /metrics``: about 1.7 ms for 220 lines, against
0.14 ms for ``/healthz``. The service's series change rarely (a new job, route or
status), so ``Exposition`` keeps each series' ``name{labels}`` between scrapes and only
formats the values each time. The samples still come from the registry's own
``collect()``, and anything this does not handle (a metric type the service does not
use, a sample with a timestamp, a name that would need escaping) is left to
``generate_latest`` whole. A test compares the two outputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

_go_float = cast(Callable[[float], str], floatToGoString)  # the library's (untyped)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")  # names written as they are
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = frozenset({"counter", "gauge", "histogram"})
_OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")  # written after, as gauges

Series = tuple[str, tuple[tuple[str, str], ...]]


class _Unhandled(Exception):
    """Something ``generate_latest`` writes differently: let it write everything."""


def _plain_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise _Unhandled(name)
    return name


def _help(name: str, documentation: str) -> str:
    text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {text}\n"


class Exposition:
    """Renders a registry as ``generate_latest`` would, remembering each series' prefix
    (kept only while the series exists, so forgotten jobs do not pile up)."""

    def __init__(self) -> None:
        self._prefixes: dict[Series, str] = {}

    def render(self, registry: CollectorRegistry) -> bytes:
        try:
            return self._render(registry)
        except _Unhandled:
            self._prefixes.clear()
            return generate_latest(registry)

    def _render(self, registry: CollectorRegistry) -> bytes:
        known, self._prefixes = self._prefixes, {}
        out: list[str] = []
        for metric in registry.collect():
            if metric.type not in _TYPES:
                raise _Unhandled(metric.type)
            name = _plain_name(metric.name + ("_total" if metric.type == "counter" else ""))
            out.append(_help(name, metric.documentation))
            out.append(f"# TYPE {name} {metric.type}\n")
            later: dict[str, list[str]] = {}
            for sample in metric.samples:
                if sample.timestamp is not None:
                    raise _Unhandled(sample.name)
                series = (sample.name, tuple(sample.labels.items()))
                prefix = known.get(series) or self._prefix(sample.name, sample.labels)
                self._prefixes[series] = prefix
                line = prefix + _go_float(sample.value) + "\n"
                for suffix in _OPENMETRICS_SUFFIXES:
                    if sample.name == metric.name + suffix:
                        later.setdefault(suffix, []).append(line)
                        break
                else:
                    out.append(line)
            for suffix, lines in sorted(later.items()):
                name = _plain_name(metric.name + suffix)
                out.append(_help(name, metric.documentation))
                out.append(f"# TYPE {name} gauge\n")
                out.extend(lines)
        return "".join(out).encode("utf-8")

    @staticmethod
    def _prefix(name: str, labels: dict[str, str]) -> str:
        """``name{label="value",...} ``, labels sorted and values escaped."""
        _plain_name(name)
        if not labels:
            return name + " "
        parts = []
        for key, value in sorted(labels.items()):
            if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
                raise _Unhandled(key)
            value = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
            parts.append(f'{key}="{value}"')
        return name + "{" + ",".join(parts) + "} "
