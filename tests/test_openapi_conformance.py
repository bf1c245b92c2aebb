"""The OpenAPI document matches what the server accepts: schemathesis generates requests from
``/openapi.json`` and checks that no answer is a 5xx and every answer conforms to the document."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from e2e_support import LiveDeployment
from hypothesis import HealthCheck, settings

from resayil_gateway.api.openapi import build_openapi
from resayil_gateway.testing import create_sqlite_template, seed_account

schema = schemathesis.openapi.from_dict(build_openapi())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = tmp_path_factory.mktemp("openapi") / "resayil.db"
    asyncio.run(create_sqlite_template(path))
    deployment = LiveDeployment(f"sqlite+aiosqlite:///{path}", "").start()
    deployment.account = deployment.run(seed_account(deployment.gateway, credits=10_000_000))
    yield deployment
    deployment.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document_and_never_answers_5xx(case, live):
    case.call_and_validate(base_url=live.base_url, headers={"Authorization": f"Bearer {live.account.key}"})
