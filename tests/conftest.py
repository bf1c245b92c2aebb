"""Core tests. Fixtures (``gateway``, ``make_gateway``, ``stack``, ``clock``, ``fake_backend``) come from
``resayil_gateway.testing``, a pytest plugin the core installs; store-backed tests run on SQLite and on
PostgreSQL + Redis."""
