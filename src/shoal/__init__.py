"""shoal: a fast, polite, crash-safe asyncio web crawler.

The public API is exactly ``__all__``. Names are loaded on first use, so that importing
``shoal.core`` (pure code) does not pull in aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigError",
    "CrawlOptions",
    "Crawler",
    "ErrorKind",
    "FetchError",
    "Follow",
    "Page",
    "Record",
    "RetryPolicy",
    "ShoalError",
    "StoreError",
    "UsageError",
    "__version__",
    "crawl",
    "export_items",
    "export_records",
    "fetch",
]

_WHERE = {
    "Config": "shoal.config",
    "RetryPolicy": "shoal.config",
    "ConfigError": "shoal.errors",
    "ErrorKind": "shoal.errors",
    "FetchError": "shoal.errors",
    "ShoalError": "shoal.errors",
    "StoreError": "shoal.errors",
    "UsageError": "shoal.errors",
    "Record": "shoal.records",
    "Page": "shoal.extract.page",
    "Follow": "shoal.extract.page",
    "CrawlOptions": "shoal.config",
    "Crawler": "shoal.api",
    "crawl": "shoal.api",
    "fetch": "shoal.api",
    "export_records": "shoal.export",
    "export_items": "shoal.items",
}

if TYPE_CHECKING:
    from shoal.api import Crawler, crawl, fetch
    from shoal.config import Config, CrawlOptions, RetryPolicy
    from shoal.errors import (
        ConfigError,
        ErrorKind,
        FetchError,
        ShoalError,
        StoreError,
        UsageError,
    )
    from shoal.export import export_records
    from shoal.extract.page import Follow, Page
    from shoal.items import export_items
    from shoal.records import Record


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
