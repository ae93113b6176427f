"""``tasks-core``: the command line of the service.

tasks-core dev                      everything locally, one command
tasks-core api                      the HTTP API against DATABASE_URL / REDIS_URL
tasks-core worker [--executor ID] [--kind KIND] [--concurrency N]
tasks-core sweeper                  recover lost publishes, dead workers, queue timeouts
tasks-core migrate                  apply the schema migrations
tasks-core keys create --org NAME   a new API key (printed last) [--expires-in-days N]
tasks-core keys revoke ID
tasks-core orgs executors --org NAME (--allow ID ... | --any | --none)
tasks-core tasks create|get|list|watch|cancel|events   the API from a terminal
"""

from __future__ import annotations

import argparse
import logging.config
import sys
import uuid
from collections.abc import Sequence

from tasks_core.logs import logging_config
from tasks_core.settings import get_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tasks-core`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    logging.captureWarnings(True)  # warnings too are records (one JSON line each)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tasks-core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    dev = sub.add_parser("dev", help="start PostgreSQL, Redis and the API locally")
    dev.add_argument("--data-dir", default="./.tasks", help="where local data is kept")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument(
        "--concurrency", type=int, default=2, help="worker processes (0: start no worker)"
    )
    dev.set_defaults(run=_run_dev)

    api = sub.add_parser("api", help="serve the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(run=_run_api)

    worker = sub.add_parser("worker", help="run a Celery worker for a set of queues")
    _add_worker_arguments(worker)
    worker.set_defaults(run=_run_worker)

    sweeper = sub.add_parser("sweeper", help="run the recovery loop (several may run)")
    sweeper.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    sweeper.set_defaults(run=_run_sweeper)

    migrate = sub.add_parser("migrate", help="apply schema migrations to DATABASE_URL")
    migrate.set_defaults(run=_run_migrate)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(metavar="ACTION")
    create = keys.add_parser("create", help="create a key for an organization")
    create.add_argument("--org", required=True, help="organization name (created if new)")
    create.add_argument("--name", default=None, help="a label for the key")
    create.add_argument(
        "--expires-in-days",
        type=_days,
        default=None,
        metavar="N",
        help="the key stops working N days from now (default: never)",
    )
    create.set_defaults(run=_run_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", help="the key id printed by `keys create`")
    revoke.set_defaults(run=_run_keys_revoke)

    orgs = sub.add_parser("orgs", help="manage organizations").add_subparsers(metavar="ACTION")
    executors = orgs.add_parser(
        "executors", help="choose the executorIds an organization's tasks may name"
    )
    executors.add_argument("--org", required=True, help="organization name")
    choice = executors.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--allow",
        action="append",
        type=_executor_id,
        metavar="ID",
        help="an executorId its tasks may name (repeatable; replaces the list)",
    )
    choice.add_argument("--any", action="store_true", help="any executorId (no list)")
    choice.add_argument("--none", action="store_true", help="no executorId: only the shared pools")
    executors.set_defaults(run=_run_orgs_executors)

    from tasks_core.tasks_cli import add_tasks_commands

    add_tasks_commands(sub)
    return parser


def _add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    # The CLI is the composition root: it alone may reach up into `worker`.
    from worker.cli import add_arguments

    add_arguments(parser)


def _run_worker(args: argparse.Namespace) -> int:
    from worker.cli import run_worker

    _database_url()
    return run_worker(args)


def _run_sweeper(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tasks_core.recovery import run_sweeper
    from tasks_core.store import store_from_settings

    _database_url()
    if args.metrics_port:
        from prometheus_client import start_http_server

        from tasks_core.metrics import registry

        start_http_server(args.metrics_port, registry=registry())
        print(f"metrics: http://0.0.0.0:{args.metrics_port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    store = store_from_settings(get_settings())
    run_sweeper(store, stop)
    store.dispose()
    return 0


def _database_url() -> str:
    url = get_settings().database_url
    if not url:
        sys.exit("DATABASE_URL is not set (e.g. postgresql://user:pass@localhost:5432/tasks)")
    return url


def _run_migrate(_: argparse.Namespace) -> int:
    from tasks_core.migrate import upgrade

    upgrade(_database_url())
    print("schema is up to date")
    return 0


def _days(value: str) -> int:
    """A whole number of days >= 1: a key that expires at once is a typo, not a wish."""
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError("the number of days must be at least 1")
    return days


def _run_keys_create(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from tasks_core.storage.db import make_engine
    from tasks_core.storage.keys import create_key, ensure_organization

    expires_at = (
        datetime.now(UTC) + timedelta(days=args.expires_in_days)
        if args.expires_in_days is not None
        else None
    )
    engine = make_engine(_database_url())
    with engine.begin() as conn:
        org_id = ensure_organization(conn, args.org)
        issued = create_key(conn, org_id, name=args.name, expires_at=expires_at)
    engine.dispose()
    print(f"organization: {args.org} ({org_id})")
    print(f"key id: {issued.id}")
    if expires_at is not None:
        print(f"expires at: {expires_at.isoformat(timespec='seconds')}")
    print("the key is shown only once; store it now:")
    print(issued.secret)
    return 0


def _run_keys_revoke(args: argparse.Namespace) -> int:
    from tasks_core.errors import NotFound
    from tasks_core.storage.db import make_engine
    from tasks_core.storage.keys import revoke_key

    try:
        key_id = uuid.UUID(args.id)
    except ValueError:
        sys.exit(f"{args.id!r} is not a key id")
    engine = make_engine(_database_url())
    try:
        with engine.begin() as conn:
            revoke_key(conn, key_id)
    except NotFound as exc:
        sys.exit(exc.message)
    finally:
        engine.dispose()
    # The API processes' key caches may still accept it a little longer.
    seconds = get_settings().key_cache_seconds
    print(f"revoked key {key_id}")
    if seconds > 0:
        print(f"API processes refuse it within KEY_CACHE_SECONDS ({seconds:g} s)")
    return 0


def _executor_id(value: str) -> str:
    from tasks_core.queues import is_valid_name

    if not is_valid_name(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid executorId")
    return value


def _run_orgs_executors(args: argparse.Namespace) -> int:
    from tasks_core.errors import NotFound
    from tasks_core.storage.db import make_engine
    from tasks_core.storage.keys import set_allowed_executors

    allowed: list[str] | None = None if args.any else (args.allow or [])
    engine = make_engine(_database_url())
    try:
        with engine.begin() as conn:
            set_allowed_executors(conn, args.org, allowed)
    except NotFound as exc:
        sys.exit(exc.message)
    finally:
        engine.dispose()
    shown = "any" if allowed is None else (", ".join(sorted(set(allowed))) or "none")
    print(f"organization {args.org}: executorIds allowed: {shown}")
    seconds = get_settings().key_cache_seconds
    if seconds > 0:
        print(f"API processes apply it within KEY_CACHE_SECONDS ({seconds:g} s)")
    return 0


def _run_api(args: argparse.Namespace) -> int:
    from tasks_core.metrics_processes import share_between_processes

    if args.workers > 1:  # each process counts; a scrape of any one sums them
        share_between_processes("api")
    from tasks_core.api.serve import serve

    _database_url()
    settings = get_settings()
    serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config(settings.log_level, settings.log_format),
    )
    return 0


def _run_dev(args: argparse.Namespace) -> int:
    from tasks_core.dev import run_dev

    return run_dev(
        data_dir=args.data_dir, host=args.host, port=args.port, concurrency=args.concurrency
    )


if __name__ == "__main__":
    sys.exit(main())
