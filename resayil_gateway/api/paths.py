"""Where the API is served: under both ``/v1`` and ``/api/v1`` (clients and proxies use either)."""

API_PREFIXES = ("/v1", "/api/v1")

# Probes and scrapes: answered for machines, never given a web session (a health check must not load the
# cookie encryption nor set a cookie).
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
