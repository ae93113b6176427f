"""``tasks-core dev``: the whole system on one machine, with one command.

With ``DATABASE_URL`` / ``REDIS_URL`` unset, real PostgreSQL and Redis are
started from the pip packages that embed them, with data kept under
``--data-dir``. The schema is migrated, a development organization and key
are made on first start (the key is printed and written to
``<data-dir>/api-key``), a worker for every known kind and a sweeper are
started, and the API is served until Ctrl-C, which stops everything this
command started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import Engine

from tasks_core.migrate import upgrade
from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.storage.keys import authenticate, create_key, ensure_organization
from tasks_core.store import store_from_settings

log = logging.getLogger(__name__)

DEV_ORGANIZATION = "dev"


def run_dev(*, data_dir: str, host: str, port: int, concurrency: int = 2) -> int:
    """Start what is missing, serve the API, stop it all on Ctrl-C."""
    from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
    from tasks_core.recovery import start_in_thread

    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as started:
        database_url = os.environ.get("DATABASE_URL", "")
        if not database_url:
            postgres = started.enter_context(EmbeddedPostgres(root / "pg"))
            database_url = postgres.url
            print(f"PostgreSQL: {database_url} (data in {root / 'pg'})", flush=True)
        redis_url = os.environ.get("REDIS_URL", "")
        if not redis_url:
            redis_server = started.enter_context(EmbeddedRedis(root / "redis"))
            redis_url = redis_server.url
            print(f"Redis:      {redis_url}", flush=True)
        # Child processes started later (workers) read the same servers.
        os.environ["DATABASE_URL"] = database_url
        os.environ["REDIS_URL"] = redis_url
        upgrade(database_url)
        settings = Settings(database_url=database_url, redis_url=redis_url)
        key = ensure_dev_key(make_engine(database_url, settings), root / "api-key")
        print(f"API key (also in {root / 'api-key'}):\n{key}", flush=True)
        if concurrency > 0:
            started.callback(_stop, _start_worker(concurrency))
        started.callback(_stop_sweeper, *start_in_thread(store_from_settings(settings)))
        print(f"API:        http://{host}:{port}", flush=True)
        print(f"            docs at http://{host}:{port}/docs", flush=True)
        print(f"            metrics at http://{host}:{port}/metrics", flush=True)
        print(f"            queues at http://{host}:{port}/v1/queues (with the key)", flush=True)
        print(f"Dashboard:  http://{host}:{port}/ui/#key={key}", flush=True)
        _serve(settings, host, port)
    print("stopped", flush=True)
    return 0


def ensure_dev_key(engine: Engine, key_file: Path) -> str:
    """The development key: the one in ``key_file`` while it is still valid,
    else a new one for the ``dev`` organization, written there (mode 600)."""
    try:
        if key_file.exists():
            secret = key_file.read_text().strip()
            with engine.connect() as conn:
                if secret and authenticate(conn, secret) is not None:
                    return secret
        with engine.begin() as conn:
            org_id = ensure_organization(conn, DEV_ORGANIZATION)
            issued = create_key(conn, org_id, name="tasks-core dev")
    finally:
        engine.dispose()
    write_private(key_file, issued.secret + "\n")
    return issued.secret


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only, from the first moment: a new
    file is created with mode 600 (never written first and restricted after,
    which leaves a window where others can read it) and then takes the
    place of the old one, whose mode may have been looser."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(fresh, path)
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise


def _stop_sweeper(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(30)


def _start_worker(concurrency: int) -> subprocess.Popen[bytes]:
    """A worker for every queue of the known kinds, as its own process, with
    its metrics on a free port."""
    from tasks_core.devservers import free_port

    metrics = free_port()
    command = [sys.executable, "-m", "tasks_core.cli", "worker", "--concurrency", str(concurrency)]
    command += ["--metrics-port", str(metrics)]
    print(f"Worker:     {' '.join(command[2:])}", flush=True)
    print(f"            metrics at http://127.0.0.1:{metrics}/metrics", flush=True)
    return subprocess.Popen(command, env=dict(os.environ))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (running tasks finish), then kill after a grace period."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from tasks_core.api.app import create_app
    from tasks_core.api.serve import FAST
    from tasks_core.logs import logging_config

    log_config = logging_config(settings.log_level, settings.log_format)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=log_config, **FAST)
