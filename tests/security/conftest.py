"""Fixtures of the hardening tests: what one tenant sends must not break the
service for the others. The tests here reuse the API ring's fixtures (the real
app on a fresh database) and the end-to-end ring's (real worker processes);
fault tests that need servers of their own use ``tests.support.stack``."""

from __future__ import annotations

from tests.e2e.conftest import (  # noqa: F401  (fixtures, found by name)
    client,
    e2e_engine,
    e2e_http,
    e2e_settings,
    e2e_store,
    start_worker,
    worker,
)
from tests.integration.conftest import (  # noqa: F401
    acme,
    client_with,
    engine,
    globex,
    http,
    org_client,
    settings,
    store,
)
