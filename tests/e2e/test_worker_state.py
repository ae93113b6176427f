"""State objects as handlers write them: compare-and-set on ``version``, so
concurrent writers are serialised and no write is lost (real PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tasks_core.errors import Conflict
from tasks_core.store import Store
from tests.support.api import OrgClient
from worker.context import StateHandle

THREADS = 8
INCREMENTS = 25


def new_state(client: OrgClient, **variables: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/states", json={"name": f"s-{uuid.uuid4().hex[:8]}", "variables": variables}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["version"] == 1
    return body


def increment(variables: dict[str, Any]) -> dict[str, Any]:
    return {**variables, "n": int(variables.get("n", 0)) + 1}


def race(store: Store, state_id: str, *, threads: int, increments: int, again: bool) -> int:
    """``threads`` writers each make ``increments`` successful ``update`` calls
    on one state, all starting together. With ``again``, a writer whose call
    gave up (Conflict) calls again; without, the give-up ends the writer.
    Returns how many calls gave up; raises the first other error."""
    gave_up: list[Conflict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer() -> None:
        handle = StateHandle(store, uuid.UUID(state_id))
        try:
            start.wait(timeout=10)
            done = 0
            while done < increments:
                try:
                    handle.update(increment)
                except Conflict as exc:
                    gave_up.append(exc)
                    if not again:
                        return
                    continue
                done += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in workers)
    assert errors == [], errors
    return len(gave_up)


def test_concurrent_writers_lose_no_update(client: OrgClient, e2e_store: Store) -> None:
    state = new_state(client, n=0, keep="me")
    race(e2e_store, state["id"], threads=THREADS, increments=INCREMENTS, again=True)
    after = client.get(f"/v1/states/{state['id']}").json()
    assert after["variables"] == {"n": THREADS * INCREMENTS, "keep": "me"}
    assert after["version"] == THREADS * INCREMENTS + 1


def test_concurrent_update_calls_do_not_give_up(client: OrgClient, e2e_store: Store) -> None:
    threads, increments = 16, 50
    state = new_state(client, n=0)
    gave_up = race(e2e_store, state["id"], threads=threads, increments=increments, again=False)
    after = client.get(f"/v1/states/{state['id']}").json()
    # What gave up was not written (nothing is lost), but it should not give up.
    assert after["variables"]["n"] == after["version"] - 1
    assert gave_up == 0, f"{gave_up} update calls gave up"
    assert after["variables"] == {"n": threads * increments}


def test_write_at_a_stale_version_raises_conflict_and_changes_nothing(
    client: OrgClient, e2e_store: Store
) -> None:
    state = new_state(client, n=1)
    handle = StateHandle(e2e_store, uuid.UUID(state["id"]))
    variables, version = handle.read()
    assert (variables, version) == ({"n": 1}, 1)
    assert handle.write({"n": 2}, version=version) == 2
    with pytest.raises(Conflict):
        handle.write({"n": 99}, version=version)
    assert handle.read() == ({"n": 2}, 2)
    after = client.get(f"/v1/states/{state['id']}").json()
    assert (after["variables"], after["version"]) == ({"n": 2}, 2)
