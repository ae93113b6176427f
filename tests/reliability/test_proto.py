import os, time, uuid, json
import pytest, redis
import hypothesis
from hypothesis import HealthCheck, given, settings, strategies as st
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance, content_type_conformance, negative_data_rejection
from fastapi.testclient import TestClient
from tasks_core.api.app import create_app
from tasks_core.db import make_engine
from tasks_core.publisher import CeleryPublisher
from tasks_core.services.store import Store
from tasks_core.settings import Settings
from tests.support.api import issue_key
from tests.support.databases import create_database, drop_database

@pytest.fixture(scope="module")
def api(pg_server, redis_server, template_db):
    name = f"fuzz_{uuid.uuid4().hex}"
    create_database(pg_server.url, name, template=template_db)
    s = Settings(database_url=pg_server.url_for(name), redis_url=redis_server.url)
    engine = make_engine(s.database_url, s)
    pub = CeleryPublisher(s.redis_url)
    store = Store(engine=engine, publisher=pub, settings=s)
    app = create_app(store=store)
    key = issue_key(engine, "fuzz")[0]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict({}))
    yield schema, key
    engine.dispose(); pub.close(); drop_database(pg_server.url, name)

def test_proto(api):
    schema, key = api
    res = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seen = []
            @settings(max_examples=20, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(mode))
            def run(case):
                t=time.monotonic()
                r = case.call(headers={"Authorization": f"Bearer {key}"})
                err=None
                try:
                    case.validate_response(r, checks=[not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance])
                except BaseExceptionGroup as e:
                    err = str(e)[:600]
                seen.append((r.status_code, r.text[:200] if mode=='positive' and r.status_code>=400 else '', r.request.headers.get("Authorization","")[:15], err, time.monotonic()-t))
            t0=time.monotonic()
            import traceback
            try:
                run()
            except BaseException as e:
                traceback.print_exception(e); raise
            print(op.label, mode, len(seen), round(time.monotonic()-t0,2), sorted(set(s[0] for s in seen)), set(s[1] for s in seen))
            for s in seen:
                if s[1]: print('   BODY', s[0], s[1])
                if s[3]: print("   FAIL", s[0], s[2])
