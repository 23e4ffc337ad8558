"""The fetch service (``shoal serve``): API tokens, metrics, and later the HTTP API."""
