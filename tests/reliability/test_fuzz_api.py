"""Property-based fuzzing of the whole HTTP API, driven by its own OpenAPI document.

The app is built once for this module (a database of its own, cloned from the
migrated template, the real Redis, and a real worker process on the module's
queues, so that created tasks run and Flows spawn their steps) and served
in-process: schemathesis loads ``/openapi.json`` from it and sends every
generated request through its ASGI transport, authenticated with a valid key.
For every response:

- no 5xx (nor an exception escaping the app);
- it conforms to what the document says of it (status code, content type,
  body schema, headers), as schemathesis' conformance checks judge it;
- every 4xx/5xx body is exactly ``{"code", "message"}``, two non-empty strings.

Tests:

- ``test_fuzz_operation``: each operation, positive (schema-valid) and negative
  (schema-violating) data. Generation is steered towards data the server can
  accept (valid ``kind`` names, ids of seeded tasks/states in paths, query and
  ``parentId``) so that the 2xx paths are exercised, not only 404/422. The
  seeded ids include Flow step tasks (completed, running, and a nested Flow
  waiting on its own step), so GET/PUT/cancel/events reach steps too.
- ``test_fuzz_stateful``: schemathesis' state machine over the links it infers
  (create -> get/update/cancel/events, list -> get, ...).
- ``test_fuzz_bad_keys``: any other Authorization is a 401 of the same shape.
- Hand-made bad bodies posted to every POST/PUT endpoint (oversized, 10,000
  levels deep, non-UTF-8, wrong type for every field, a non-object, empty,
  wrong Content-Type): a 4xx of the error shape, never a 5xx, nothing stored.
- After each fuzz test, every seeded task/state and every page of the listing
  must still read as 200 (a refused request must not leave a poison row).

Bugs this fuzzing found are kept as minimal ``test_regression_*`` tests at
the end of the module.

Bounded by default (``FUZZ_EXAMPLES`` = 30 examples per operation and mode,
derandomized, so CI runs are fast and repeatable). Longer, or with a different
(random) exploration:

    FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -q tests/reliability/test_fuzz_api.py \
        -p no:cacheprovider -s -k "fuzz_operation or fuzz_stateful or bad_keys"
    FUZZ_EXAMPLES=300 FUZZ_SEED=12345 .venv/bin/python -m pytest -q \
        tests/reliability/test_fuzz_api.py -p no:cacheprovider -s -k "fuzz_operation"

(the ``-k`` selects the generative tests; the hand-made bodies do not scale
with FUZZ_EXAMPLES. FUZZ_EXAMPLES=500 takes about two and a half minutes:
some 7,000 generated requests and 2,000 stateful steps.)

A summary line is printed at the end of the module, e.g.
``fuzz: operations=10 examples=600 ... server_errors=0 schema_violations=0``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import hypothesis
import jsonschema_rs
import pytest
import redis
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, text

from tasks_core.api.app import create_app
from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.publisher import CeleryPublisher
from tasks_core.queues import NAME_PATTERN
from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.store import Store
from tests.support.api import issue_key
from tests.support.databases import create_database, drop_database
from tests.support.figures import report as report_figure
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = max(1, int(os.environ.get("FUZZ_EXAMPLES", "30")))
FUZZ_SEED = os.environ.get("FUZZ_SEED")
MIB = 1_048_576

# The document as the app serves it, read once at import to name the tests
# (building it needs no database). The fuzz tests load it again over HTTP.
_DOCUMENT: dict[str, Any] = create_app(Settings()).openapi()
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, item in _DOCUMENT["paths"].items()
    for method in item
    if method in ("get", "put", "post", "delete", "patch")
]
WRITE_OPERATIONS = [
    label for label in OPERATIONS if label.split()[0] in ("POST", "PUT", "PATCH", "DELETE")
]

# schemathesis' judgement of "conforms to the document"; 5xx and the error
# shape are checked by this module itself (see ``examine``).
CONFORMANCE_CHECKS = [
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
]


# --------------------------------------------------------------------------
# The app under test, once per module
# --------------------------------------------------------------------------


@dataclass
class FuzzApi:
    """The app on a module database, a key, and the seeded ids."""

    app: FastAPI
    http: TestClient
    engine: Engine
    key: str
    settings: Settings
    schema: Any = None
    task_ids: list[str] = field(default_factory=list)
    state_ids: list[str] = field(default_factory=list)
    step_ids: list[str] = field(default_factory=list)  # Flow steps, among task_ids

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def create(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("kind", "default")
        response = self.http.post("/v1/tasks", json=fields, headers=self.auth)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def seed(api: FuzzApi) -> None:
    """A few tasks (a tree, records in every status, a stateful one, a Flow) and states."""
    parent = api.create(title="parent")
    child = api.create(parentId=parent["id"], title="child")
    grandchild = api.create(parentId=child["id"], kind="CallAction", targetId="http/get")
    stateful = api.create(stateful=True, input={"a": [1, 2]}, params={"p": "q"})
    running = api.create(status="running", executorId="pool-1")
    done = api.create(
        status="completed",
        startedAt="2024-01-01T00:00:00Z",
        endedAt="2024-01-01T00:01:00Z",
        output={"ok": True},
    )
    failed = api.create(status="failed", parentId=parent["id"])
    flow = api.create(
        kind="Flow",
        params={"steps": [{"id": "a", "kind": "default"}, {"id": "b", "kind": "default"}]},
    )
    cancelled = api.create()
    response = api.http.post(f"/v1/tasks/{cancelled['id']}/cancel", headers=api.auth)
    assert response.status_code == 200, response.text
    for task in (parent, child, grandchild, stateful, running, done, failed, flow, cancelled):
        api.task_ids.append(task["id"])
    state = api.http.post(
        "/v1/states", json={"name": "fuzz", "variables": {"a": 1}}, headers=api.auth
    )
    assert state.status_code == 201, state.text
    api.state_ids.extend([state.json()["id"], stateful["stateId"]])
    seed_steps(api)


# Steps that stay put while the module runs: one completed, one running (it
# sleeps until cancelled), and a nested Flow waiting on a running step of its own.
LONG = {"kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": 600}}
STEPPED_FLOW = {
    "kind": "Flow",
    "params": {
        "steps": [
            {"id": "done", "kind": "CallAction", "targetId": "builtin/echo", "input": {"a": 1}},
            {"id": "long", **LONG},
            {"id": "inner", "kind": "Flow", "params": {"steps": [{"id": "deep", **LONG}]}},
        ]
    },
}


def seed_steps(api: FuzzApi) -> None:
    """A Flow run by the module's worker, its steps' ids added to the seeded ones."""
    flow = api.create(**STEPPED_FLOW)

    def steps() -> list[dict[str, Any]] | None:
        got = api.http.get(f"/v1/tasks/{flow['id']}", params={"depth": 2}, headers=api.auth)
        children = got.json()["children"]
        nested = [t for c in children for t in c["children"]]
        states = {c["stepId"]: c["status"] for c in children + nested}
        ready = states == {
            "done": "completed", "long": "running", "inner": "waiting", "deep": "running"
        }  # fmt: skip
        return children + nested if ready else None

    for step in wait_until(steps, timeout=30, message="the seeded Flow's steps never ran"):
        api.step_ids.append(step["id"])
        api.task_ids.append(step["id"])


@pytest.fixture(scope="module")
def fuzz_api(
    pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis, template_db: str
) -> Iterator[FuzzApi]:
    """The real app on a database of this module's own, shared by its tests.

    Module scope on purpose: schemathesis/hypothesis call the test body once
    per example, which function-scoped fixtures (a database per test) do not
    follow; the state the examples leave behind is part of what is fuzzed.
    """
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.url, name, template=template_db)
    settings = Settings(
        database_url=pg_server.url_for(name),
        redis_url=redis_server.url,
        queue_prefix=name,
        rate_limit_per_minute=0,  # hundreds of requests a minute from one key, by design
        unauthenticated_rate_limit_per_minute=0,  # and of bad keys (test_fuzz_bad_keys)
    )
    engine = make_engine(settings.database_url, settings)
    publisher = CeleryPublisher(settings.redis_url)
    app = create_app(store=Store(engine=engine, publisher=publisher, settings=settings))
    secret, _, _ = issue_key(engine, "fuzz")
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "QUEUE_PREFIX": name,
        "SHUTDOWN_GRACE_SECONDS": "0",  # the seeded steps sleep until stopped
    }
    worker = WorkerProcess(env, ["--concurrency", "4"]).start()
    try:
        with TestClient(app, raise_server_exceptions=False) as http:
            api = FuzzApi(app=app, http=http, engine=engine, key=secret, settings=settings)
            seed(api)
            api.schema = schemathesis.openapi.from_asgi(
                "/openapi.json", app, config=schemathesis.Config()
            )
            yield api
    finally:
        worker.stop()
        publisher.close()
        engine.dispose()
        drop_database(pg_server.url, name)
        with redis.Redis.from_url(redis_server.url) as client:
            for key in client.scan_iter(match=f"{name}.*"):
                client.delete(key)


# --------------------------------------------------------------------------
# Checks and the tally
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # server_error | schema_violation | error_shape | broken_read
    operation: str
    detail: str
    reproduce: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.operation}: {self.detail}\n    {self.reproduce}"


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    stateful_steps: int = 0
    explicit_requests: int = 0
    step_requests: int = 0  # generated requests whose path named a Flow step task
    statuses: Counter[int] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)

    def add(self, problems: list[Problem]) -> None:
        for problem in problems:
            self.problems[problem.kind] += 1


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary() -> Iterator[None]:
    """Print the module's one-line summary when its last test is done."""
    started = time.monotonic()
    yield
    statuses = ",".join(f"{s}:{n}" for s, n in sorted(TALLY.statuses.items()))
    report_figure(
        f"\nfuzz: operations={len(TALLY.operations)} examples={TALLY.examples}"
        f" stateful_steps={TALLY.stateful_steps} explicit_requests={TALLY.explicit_requests}"
        f" step_task_requests={TALLY.step_requests}"
        f" server_errors={TALLY.problems['server_error']}"
        f" schema_violations={TALLY.problems['schema_violation']}"
        f" error_shape_violations={TALLY.problems['error_shape']}"
        f" broken_reads={TALLY.problems['broken_read']}"
        f" statuses={statuses} seconds={time.monotonic() - started:.1f}"
    )


def error_shape_problems(status: int, content_type: str, content: bytes) -> list[str]:
    """What is wrong with an error answer's body ([] when it is {code, message})."""
    if status < 400:
        return []
    if not content_type.startswith("application/json"):
        return [f"{status} with Content-Type {content_type!r}, not application/json"]
    try:
        body = json.loads(content)
    except ValueError:
        return [f"{status} with a body that is not JSON: {content[:200]!r}"]
    if not isinstance(body, dict) or set(body) != {"code", "message"}:
        return [f"{status} body is not exactly {{code, message}}: {str(body)[:300]}"]
    return [
        f"{status} body's {name} is not a non-empty string: {body[name]!r}"
        for name in ("code", "message")
        if not isinstance(body[name], str) or not body[name]
    ]


def curl(case: Case) -> str:
    try:
        return case.as_curl_command(headers={"Authorization": "Bearer <key>"})
    except Exception:
        return repr(case)


def examine(case: Case, response: schemathesis.Response) -> list[Problem]:
    """Every problem of one response to one generated case."""
    label = case.operation.label
    found: list[Problem] = []
    status = response.status_code
    if status >= 500:
        detail = f"{status}: {response.content[:300]!r}"
        found.append(Problem("server_error", label, detail, curl(case)))
    try:
        case.validate_response(response, checks=CONFORMANCE_CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            detail = f"{failure.title}: {failure.message}"[:800]
            found.append(Problem("schema_violation", label, detail, curl(case)))
    content_type = (response.headers.get("content-type") or [""])[0]
    for detail in error_shape_problems(status, content_type, response.content):
        found.append(Problem("error_shape", label, detail, curl(case)))
    return found


def send(api: FuzzApi, case: Case) -> list[Problem]:
    """Send one generated case with a valid key and examine the answer."""
    TALLY.examples += 1
    TALLY.operations.add(case.operation.label)
    if (case.path_parameters or {}).get("taskId") in api.step_ids:
        TALLY.step_requests += 1
    try:
        response = case.call(headers=api.auth)
    except Exception as exc:  # the app raised instead of answering
        return [Problem("server_error", case.operation.label, repr(exc)[:500], curl(case))]
    TALLY.statuses[response.status_code] += 1
    return examine(case, response)


def still_serving(api: FuzzApi) -> list[Problem]:
    """After fuzzing: the seeded data is still readable and the listing still
    answers (a request refused with a 4xx must not have stored a poison row)."""
    found = []
    urls = [f"/v1/tasks/{task_id}" for task_id in api.task_ids]
    urls += [f"/v1/states/{state_id}" for state_id in api.state_ids]
    cursor: str | None = ""
    while cursor is not None:  # every page of the listing, to the end
        urls.append(f"/v1/tasks?limit=500&cursor={cursor}" if cursor else "/v1/tasks?limit=500")
        response = api.http.get(urls[-1], headers=api.auth)
        cursor = response.json().get("nextCursor") if response.status_code == 200 else None
    for url in urls:
        response = api.http.get(url, headers=api.auth)
        if response.status_code != 200:
            detail = f"after fuzzing, GET {url} is {response.status_code}: {response.text[:300]}"
            found.append(Problem("broken_read", f"GET {url}", detail, ""))
    return found


def fuzz_settings(max_examples: int, **kwargs: Any) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=FUZZ_SEED is None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        **kwargs,
    )


def seeded(test: Any) -> Any:
    """With FUZZ_SEED set, a reproducible random exploration of that seed."""
    return hypothesis.seed(int(FUZZ_SEED))(test) if FUZZ_SEED is not None else test


def report(problems: list[Problem], limit: int = 12) -> str:
    unique: dict[tuple[str, str, str], Problem] = {}
    for problem in problems:
        unique.setdefault((problem.kind, problem.operation, problem.detail[:120]), problem)
    shown = "\n".join(str(p) for p in list(unique.values())[:limit])
    return f"{len(problems)} problems ({len(unique)} distinct):\n{shown}"


# --------------------------------------------------------------------------
# Steering generated data towards what the server can accept
# --------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["default", "CallAction", "Flow", "x", "a.b:c/d-e_f", "0" * 128]),
    st.from_regex(NAME_PATTERN, fullmatch=True),
    st.from_regex(NAME_PATTERN),  # `$` also matches before a final newline
)
STEP_IDS = st.sampled_from(["a", "b", "c", "step-1"])
REFS = st.sampled_from(["input", "input.a", "steps.a.output", "steps.b.output.x", "steps", "x"])
STEP = st.fixed_dictionaries(
    {"id": STEP_IDS, "kind": st.sampled_from(["default", "CallAction", "Flow"])},
    optional={
        "after": st.lists(STEP_IDS, max_size=3),
        "input": st.one_of(st.none(), st.fixed_dictionaries({"$ref": REFS})),
        "maxAttempts": st.integers(0, 101),
        "timeoutSeconds": st.one_of(st.none(), st.floats(-1, 10, allow_nan=False)),
        "continueOnError": st.booleans(),
        "executorId": st.one_of(st.none(), NAMES),
        "params": st.one_of(st.just({}), st.just({"steps": [{"id": "z", "kind": "default"}]})),
    },
)
# Any instant of years 1-9999 at any UTC offset; on the first and the last day
# its UTC value may fall outside them (a 422, see test_regression_*).
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
MINUTES = st.integers(0, 24 * 60 - 1).map(lambda m: timedelta(minutes=m))
EDGE_DATE_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-00:01",
    "1970-01-01T00:00:00Z",
]
DATE_TIMES = st.one_of(
    st.sampled_from(EDGE_DATE_TIMES),
    st.datetimes(timezones=st.one_of(st.none(), OFFSETS)).map(datetime.isoformat),
    st.builds(lambda t, tz: (datetime(1, 1, 1) + t).replace(tzinfo=tz), MINUTES, OFFSETS).map(
        datetime.isoformat
    ),
    st.builds(lambda t, tz: (datetime(9999, 12, 31) + t).replace(tzinfo=tz), MINUTES, OFFSETS).map(
        datetime.isoformat
    ),
)
FLOW_PARAMS = st.fixed_dictionaries(
    {"steps": st.lists(STEP, max_size=5)},
    optional={"mode": st.sampled_from(["parallel", "sequential", "other"])},
)


def steer(api: FuzzApi, case: Case, data: st.DataObject, mode: GenerationMode) -> None:
    """Swap some generated values for ones that exist or pass the server's own
    rules (which the document does not state: name patterns, known ids)."""
    path = case.path_parameters or {}
    for name, ids in (("taskId", api.task_ids), ("stateId", api.state_ids)):
        if name in path and data.draw(st.integers(0, 3), label=f"seeded {name}") > 0:
            path[name] = data.draw(st.sampled_from(ids), label=name)
    query = case.query if isinstance(case.query, dict) else {}
    if "parentId" in query and data.draw(st.booleans(), label="seeded parentId query"):
        query["parentId"] = data.draw(st.sampled_from(api.task_ids), label="parentId")
    body = case.body
    if not mode.is_positive or not isinstance(body, dict):
        return
    if "kind" in body and data.draw(st.integers(0, 9), label="valid kind") > 0:
        body["kind"] = data.draw(NAMES, label="kind")
    if body.get("executorId") is not None and data.draw(st.booleans(), label="valid executor"):
        body["executorId"] = data.draw(NAMES, label="executorId")
    if body.get("parentId") is not None and data.draw(st.booleans(), label="seeded parent"):
        body["parentId"] = data.draw(st.sampled_from(api.task_ids), label="parentId")
    takes_times = (
        "startedAt" in (request_schema(case.operation.label) or {"properties": {}})["properties"]
    )
    for name in ("startedAt", "endedAt"):
        if takes_times and data.draw(st.booleans(), label=f"any {name}"):
            body[name] = data.draw(DATE_TIMES, label=name)
    if body.get("kind") == "Flow" and data.draw(st.booleans(), label="flow steps"):
        body["params"] = data.draw(FLOW_PARAMS, label="params")
        body.pop("targetId", None)


def operation(api: FuzzApi, label: str) -> Any:
    method, path = label.split(" ", 1)
    return api.schema[path][method]


# --------------------------------------------------------------------------
# Fuzzing from the document
# --------------------------------------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_operation(fuzz_api: FuzzApi, label: str) -> None:
    """Positive and negative data for one operation: no 5xx, conforming answers."""
    op = operation(fuzz_api, label)
    problems: list[Problem] = []

    def fuzz(mode: GenerationMode) -> None:
        @seeded
        @fuzz_settings(FUZZ_EXAMPLES)
        @given(case=op.as_strategy(mode), data=st.data())
        def run(case: Case, data: st.DataObject) -> None:
            # A case negating the security scheme only drops the key: a 401
            # before anything else is read. test_fuzz_bad_keys covers that.
            hypothesis.assume(not fuzz_api.schema.is_security_param_negated(case))
            steer(fuzz_api, case, data, mode)
            problems.extend(send(fuzz_api, case))

        run()

    reached_steps = TALLY.step_requests
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            fuzz(mode)
        except Unsatisfiable:
            # Nothing to negate (GET /healthz has no parameters and no body).
            assert mode is GenerationMode.NEGATIVE, label
    if "{taskId}" in label:
        assert TALLY.step_requests > reached_steps, f"{label} never reached a Flow step task"
    problems.extend(still_serving(fuzz_api))
    TALLY.add(problems)
    assert not problems, report(problems)


def test_fuzz_stateful(fuzz_api: FuzzApi) -> None:
    """Sequences over the links schemathesis infers: what one answer returns
    (a task's id, its stateId, a nextCursor) feeds the next request."""
    problems: list[Problem] = []
    base = fuzz_api.schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Case) -> None:
            body = case.body
            if isinstance(body, dict) and "kind" in body:
                kind = body["kind"]
                if not isinstance(kind, str) or not re.fullmatch(NAME_PATTERN, kind):
                    body["kind"] = "default"

        def call(self, case: Case, **kwargs: Any) -> schemathesis.Response:
            TALLY.stateful_steps += 1
            TALLY.operations.add(case.operation.label)
            try:
                response = case.call(headers=fuzz_api.auth, **kwargs)
            except Exception as exc:
                problems.append(
                    Problem("server_error", case.operation.label, repr(exc)[:500], curl(case))
                )
                raise
            TALLY.statuses[response.status_code] += 1
            return response

        def validate_response(
            self, response: schemathesis.Response, case: Case, *args: Any, **kwargs: Any
        ) -> None:
            problems.extend(examine(case, response))

    # With FUZZ_SEED set, derandomize is off: a random exploration each run.
    Workflow.run(settings=fuzz_settings(max(5, FUZZ_EXAMPLES // 2), stateful_step_count=8))
    problems.extend(still_serving(fuzz_api))
    TALLY.add(problems)
    assert not problems, report(problems)


BAD_KEYS = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80).map(
        lambda token: f"Bearer {token}"
    ),
    st.sampled_from(["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Token abc"]),
)


@pytest.mark.parametrize("label", [label for label in OPERATIONS if "/v1/" in label])
def test_fuzz_bad_keys(fuzz_api: FuzzApi, label: str) -> None:
    """Any Authorization but a valid key: 401 of the error shape."""
    method, path = label.split(" ", 1)
    url = path.replace("{taskId}", fuzz_api.task_ids[0]).replace("{stateId}", fuzz_api.state_ids[0])
    problems: list[str] = []

    @seeded
    @fuzz_settings(max(5, FUZZ_EXAMPLES // 3))
    @given(authorization=BAD_KEYS)
    def run(authorization: str) -> None:
        if authorization == f"Bearer {fuzz_api.key}":
            return
        response = fuzz_api.http.request(
            method,
            url,
            headers={"Authorization": authorization},
            json={"kind": "default", "name": "n"} if method != "GET" else None,
        )
        TALLY.explicit_requests += 1
        TALLY.statuses[response.status_code] += 1
        if response.status_code != 401:
            problems.append(f"{authorization!r}: {response.status_code} {response.text[:200]}")
        problems.extend(
            error_shape_problems(
                response.status_code, response.headers.get("content-type", ""), response.content
            )
        )

    run()
    assert not problems, problems[:10]


# --------------------------------------------------------------------------
# Hand-made bad bodies on every POST/PUT endpoint
# --------------------------------------------------------------------------


def request_schema(label: str) -> dict[str, Any] | None:
    """The JSON schema of the operation's request body (None: it takes none)."""
    method, path = label.split(" ", 1)
    body = _DOCUMENT["paths"][path][method.lower()].get("requestBody")
    if body is None:
        return None
    ref: str = body["content"]["application/json"]["schema"]["$ref"]
    schema: dict[str, Any] = _DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def valid_body(label: str) -> dict[str, Any]:
    return {"/v1/states": {"name": "fuzz"}, "/v1/tasks": {"kind": "default"}}.get(
        label.split(" ", 1)[1], {}
    )


def wrong_values(label: str) -> list[tuple[str, Any]]:
    """(field, value) for every field of the body and every JSON type the
    document says the field can not take."""
    schema = request_schema(label)
    if schema is None:
        return []
    candidates: list[Any] = [12345, -1.5, True, "some text", "12", [1, "a"], {"a": 1}, None]
    cases = []
    for name in schema["properties"]:
        pointer = f"#/components/schemas/{schema['title']}/properties/{name}"
        validator = jsonschema_rs.validator_for(
            {"$ref": pointer, "components": _DOCUMENT["components"]}, validate_formats=True
        )
        cases.extend((name, value) for value in candidates if not validator.is_valid(value))
    return cases


def field_types(label: str, name: str) -> set[str]:
    """The JSON types and formats the document allows for one body field."""
    schema = request_schema(label) or {"properties": {}}
    found: set[str] = set()
    stack = [schema["properties"].get(name, {})]
    while stack:
        item = stack.pop()
        if "$ref" in item:
            stack.append(_DOCUMENT["components"]["schemas"][item["$ref"].rsplit("/", 1)[1]])
        stack.extend(item.get("anyOf", []))
        if "type" in item:
            found.add(item.get("format", item["type"]))
    return found


@dataclass(frozen=True)
class Raw:
    """A hand-made request body: the bytes and the Content-Type sent."""

    content: bytes | Callable[[], Iterator[bytes]] | None
    content_type: str | None = "application/json"


def deep(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def bad_bodies(label: str) -> dict[str, Raw]:
    """Bodies every operation taking JSON must refuse with a 4xx."""
    valid = json.dumps(valid_body(label))
    # Inside a field the document types as any JSON (or the body itself).
    holder = {"/v1/states": '"variables": {{"a": {}}}', "/v1/tasks": '"input": {}'}.get(
        label.split(" ", 1)[1].split("/{")[0], '"input": {}'
    )
    name = valid[1:-1]
    pad = {"/v1/states": "name", "/v1/tasks": "title"}.get(label.split(" ", 1)[1], "title")
    big = json.dumps({**valid_body(label), pad: "x" * (MIB + 1)}).encode()
    bodies = {
        "oversized": Raw(big),
        "oversized_streamed": Raw(
            lambda: iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
        ),
        "deep_10000_top_level": Raw(deep(10_000).encode()),
        "deep_10000_objects": Raw(('{"a":' * 10_000 + "1" + "}" * 10_000).encode()),
        "deep_10000_in_field": Raw(
            ("{" + ", ".join(filter(None, [name, holder.format(deep(10_000))])) + "}").encode()
        ),
        "non_utf8": Raw(b'{"kind": "\xff\xfe\xfa", "name": "\xc3\x28", "title": "\x80"}'),
        "non_utf8_garbage": Raw(bytes(range(128, 256))),
        "latin1_declared": Raw(
            '{"kind": "défault", "name": "é"}'.encode("latin-1"),
            "application/json; charset=latin-1",
        ),
        "array": Raw(f"[{valid}]".encode()),
        "string": Raw(b'"default"'),
        "number": Raw(b"42"),
        "float": Raw(b"1e999"),
        "true": Raw(b"true"),
        "null": Raw(b"null"),
        "empty": Raw(b""),
        "whitespace": Raw(b"   \n"),
        "truncated": Raw(valid[:-1].encode()),
        "trailing_garbage": Raw(valid.encode() + b"}}"),
        "nan": Raw(b"NaN"),
        "no_body_no_content_type": Raw(None, None),
        "text_plain": Raw(valid.encode(), "text/plain"),
        "form_urlencoded": Raw(b"kind=default&name=fuzz", "application/x-www-form-urlencoded"),
        "multipart": Raw(
            b'--XyZ\r\nContent-Disposition: form-data; name="kind"\r\n\r\ndefault\r\n--XyZ--\r\n',
            "multipart/form-data; boundary=XyZ",
        ),
        "multipart_no_boundary": Raw(b"--XyZ\r\n\r\n--XyZ--\r\n", "multipart/form-data"),
        "xml": Raw(b"<task><kind>default</kind></task>", "application/xml"),
        "octet_stream": Raw(valid.encode(), "application/octet-stream"),
        "no_content_type": Raw(b"kind=default", None),
        "bogus_content_type": Raw(valid.encode(), "/;;;=="),
    }
    return bodies


def body_cases() -> list[Any]:
    cases = []
    for label in WRITE_OPERATIONS:
        if request_schema(label) is None:
            continue
        for name in bad_bodies(label):
            cases.append(pytest.param(label, name, id=f"{label} {name}"))
    return cases


def target(api: FuzzApi, label: str) -> tuple[str, str]:
    method, path = label.split(" ", 1)
    # Of a pool no worker serves: it waits `queued`, so only the request under test changes it.
    task_id = api.create(title="target", executorId=NO_POOL)["id"] if "{taskId}" in path else ""
    return method, path.replace("{taskId}", task_id)


NO_POOL = "fuzz-no-worker"
# Kinds the module's worker runs (its registry and Flow), as tasks-core worker chooses them.
SERVED_KINDS = ["CallAction", "Flow", "default", "test.StateCounter", "test.StateReader"]
_BUSY = text(
    "SELECT count(*) FROM tasks WHERE executor_id IS NULL AND kind = ANY(:kinds)"
    " AND NOT (id = ANY(CAST(:steps AS uuid[])))"
    " AND (status IN ('created', 'queued') OR (status = 'running' AND worker IS NOT NULL))"
)


def settle(api: FuzzApi) -> None:
    """Wait until the worker has nothing left to run (but the seeded steps,
    which sleep): the tasks earlier tests made no longer change the counts."""

    def idle() -> bool:
        with api.engine.connect() as conn:
            values = {"kinds": SERVED_KINDS, "steps": api.step_ids}
            return int(conn.execute(_BUSY, values).scalar_one()) == 0

    try:
        wait_until(idle, timeout=60, message="the worker never finished the fuzzed tasks")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still busy: {_busy_tasks(api)}") from None


def _busy_tasks(api: FuzzApi) -> list[dict[str, Any]]:
    """The tasks that kept the worker from settling, with their event log."""
    with api.engine.connect() as conn:
        values = {"kinds": SERVED_KINDS, "steps": api.step_ids}
        ids = [r.id for r in conn.execute(text(_BUSY.text.replace("count(*)", "id")), values)]
        rows = conn.execute(
            text(
                "SELECT t.id, t.kind, t.status, t.worker, t.target_id, t.input, t.parent_id,"
                " t.available_at, (SELECT json_agg(json_build_array(e.type, e.to_status, e.actor,"
                " e.detail) ORDER BY e.id) FROM task_events e WHERE e.task_id = t.id) AS events"
                " FROM tasks t WHERE t.id = ANY(:ids) LIMIT 5"
            ),
            {"ids": ids},
        )
        return [dict(r._mapping) for r in rows]


def snapshot(api: FuzzApi, url: str) -> dict[str, Any]:
    """What a refused request must not change: row counts and the task it targets."""
    settle(api)
    rows = {table: api.count(table) for table in ("tasks", "states", "task_events")}
    if "/v1/tasks/" in url:
        rows["task"] = api.http.get(url.removesuffix("/cancel"), headers=api.auth).json()
    return rows


def assert_refused(response: httpx.Response) -> None:
    TALLY.explicit_requests += 1
    TALLY.statuses[response.status_code] += 1
    assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"
    assert 400 <= response.status_code < 500, f"accepted: {response.status_code} {response.text}"
    shape = error_shape_problems(
        response.status_code, response.headers.get("content-type", ""), response.content
    )
    if shape:
        TALLY.problems["error_shape"] += 1
    assert not shape, shape


@pytest.mark.parametrize(("label", "body"), body_cases())
def test_bad_body_is_refused(fuzz_api: FuzzApi, label: str, body: str) -> None:
    raw = bad_bodies(label)[body]
    method, url = target(fuzz_api, label)
    before = snapshot(fuzz_api, url)
    headers = dict(fuzz_api.auth)
    if raw.content_type is not None:
        headers["Content-Type"] = raw.content_type
    content = raw.content() if callable(raw.content) else raw.content
    response = fuzz_api.http.request(method, url, content=content, headers=headers)
    assert_refused(response)
    if body.startswith("oversized"):
        assert response.status_code == 413, response.text
    assert snapshot(fuzz_api, url) == before


def wrong_type_cases() -> list[Any]:
    return [
        pytest.param(label, name, value, id=f"{label} {name}={json.dumps(value)}")
        for label in WRITE_OPERATIONS
        for name, value in wrong_values(label)
    ]


@pytest.mark.parametrize(("label", "name", "value"), wrong_type_cases())
def test_wrong_type_is_refused(fuzz_api: FuzzApi, label: str, name: str, value: Any) -> None:
    """Every field, every JSON type its schema excludes: a 4xx naming nothing stored."""
    method, url = target(fuzz_api, label)
    before = snapshot(fuzz_api, url)
    body = {**valid_body(label), name: value}
    response = fuzz_api.http.request(method, url, json=body, headers=fuzz_api.auth)
    assert_refused(response)
    assert snapshot(fuzz_api, url) == before


@pytest.mark.parametrize("label", [label for label in WRITE_OPERATIONS if "cancel" in label])
@pytest.mark.parametrize("body", ["oversized", "deep_10000_top_level", "non_utf8", "array"])
def test_body_of_an_operation_without_one(fuzz_api: FuzzApi, label: str, body: str) -> None:
    """An operation that takes no body ignores one (the body limit still applies): never a 5xx."""
    raw = bad_bodies("POST /v1/tasks")[body]
    method, url = target(fuzz_api, label)
    headers = {**fuzz_api.auth, "Content-Type": "application/json"}
    assert not callable(raw.content)
    response = fuzz_api.http.request(method, url, content=raw.content, headers=headers)
    TALLY.explicit_requests += 1
    TALLY.statuses[response.status_code] += 1
    assert response.status_code < 500, response.text
    if body == "oversized":
        assert response.status_code == 413, response.text
    else:
        assert response.status_code == 200, response.text
    assert not error_shape_problems(
        response.status_code, response.headers.get("content-type", ""), response.content
    )


@pytest.mark.parametrize("path", sorted(_DOCUMENT["paths"]))
def test_undocumented_methods_are_405(fuzz_api: FuzzApi, path: str) -> None:
    url = path.replace("{taskId}", fuzz_api.task_ids[0]).replace("{stateId}", fuzz_api.state_ids[0])
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        if method.lower() in _DOCUMENT["paths"][path]:
            continue
        response = fuzz_api.http.request(method, url, headers=fuzz_api.auth)
        TALLY.explicit_requests += 1
        TALLY.statuses[response.status_code] += 1
        assert response.status_code == 405, (method, response.text)
        assert not error_shape_problems(
            405, response.headers.get("content-type", ""), response.content
        ), response.text


# --------------------------------------------------------------------------
# Known product bugs found by this module: minimal reproductions
# --------------------------------------------------------------------------


def other_org(api: FuzzApi) -> dict[str, str]:
    """A key of a fresh organization, so a reproduction leaves the fuzzed one intact."""
    secret, _, _ = issue_key(api.engine, f"repro-{uuid.uuid4().hex[:8]}")
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "completed", "endedAt": "9999-12-31T23:59:59-01:00"},
        {"startedAt": "0001-01-01T00:00:00+01:00"},
    ],
    ids=["after_year_9999", "before_year_1"],
)
def test_regression_create_outside_utc_range(fuzz_api: FuzzApi, fields: dict[str, str]) -> None:
    headers = other_org(fuzz_api)
    before = fuzz_api.count("tasks")
    response = fuzz_api.http.post("/v1/tasks", json={"kind": "default", **fields}, headers=headers)
    listing = fuzz_api.http.get("/v1/tasks", headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert fuzz_api.count("tasks") == before, "a refused create stored a task"
    assert listing.status_code == 200, listing.text


@pytest.mark.parametrize("value", [12345, -1.5, "12"])
@pytest.mark.parametrize("label", ["POST /v1/tasks", "PUT /v1/tasks/{taskId}"])
def test_regression_number_as_date_time(fuzz_api: FuzzApi, label: str, value: Any) -> None:
    method, url = target(fuzz_api, label)
    body = {**valid_body(label), "endedAt": value}
    response = fuzz_api.http.request(method, url, json=body, headers=fuzz_api.auth)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("value", [True, "12"])
@pytest.mark.parametrize("name", ["maxAttempts", "timeoutSeconds"])
def test_regression_boolean_or_string_as_number(fuzz_api: FuzzApi, name: str, value: Any) -> None:
    body = {"kind": "default", name: value}
    response = fuzz_api.http.post("/v1/tasks", json=body, headers=fuzz_api.auth)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "default\n"},
        {"kind": "default", "executorId": "pool\n"},
        {"kind": "Flow", "params": {"steps": [{"id": "a\n", "kind": "default"}]}},
    ],
    ids=["kind", "executorId", "step_id"],
)
def test_regression_name_with_trailing_newline(fuzz_api: FuzzApi, body: dict[str, Any]) -> None:
    response = fuzz_api.http.post("/v1/tasks", json=body, headers=other_org(fuzz_api))
    assert response.status_code == 422, response.text


def app_with(api: FuzzApi, publisher: Any = None, **settings: Any) -> FastAPI:
    """Another app on the module's database, with other settings or another broker."""
    changed = api.settings.model_copy(update=settings)
    publisher = publisher or CeleryPublisher(changed.redis_url)
    return create_app(store=Store(engine=api.engine, publisher=publisher, settings=changed))


def test_regression_rate_limited_status_is_undocumented(fuzz_api: FuzzApi) -> None:
    app = app_with(fuzz_api, rate_limit_per_minute=1)
    headers = other_org(fuzz_api)
    case = operation(fuzz_api, "GET /v1/tasks").Case()
    case.call(app=app, headers=headers)
    response = case.call(app=app, headers=headers)
    assert response.status_code == 429, response.content
    assert not error_shape_problems(429, response.headers["content-type"][0], response.content)
    assert [p for p in examine(case, response) if p.kind == "schema_violation"] == []


class DownBroker:
    """A publisher whose broker never answers."""

    def publish(
        self, message: Any, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        raise ConnectionError("broker down")

    def ping(self) -> bool:
        return False


def test_regression_readyz_503_is_undocumented(fuzz_api: FuzzApi) -> None:
    app = app_with(fuzz_api, publisher=DownBroker())
    case = operation(fuzz_api, "GET /readyz").Case()
    response = case.call(app=app)
    assert response.status_code == 503, response.content
    assert not error_shape_problems(503, response.headers["content-type"][0], response.content)
    assert [p for p in examine(case, response) if p.kind == "schema_violation"] == []
