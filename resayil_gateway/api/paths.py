"""Where the API is served: under both ``/v1`` and ``/api/v1`` (clients and proxies use either)."""

API_PREFIXES = ("/v1", "/api/v1")
