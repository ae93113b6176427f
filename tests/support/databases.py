"""Test databases: a migrated template, cloned for each test and dropped after it."""

from __future__ import annotations

import psycopg
from psycopg import sql

TEMPLATE_DATABASE = "tasks_template"


def create_database(admin_url: str, name: str, *, template: str | None = None) -> None:
    """Create the database ``name``, as a copy of ``template`` if given."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    # CREATE and DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def drop_database(admin_url: str, name: str) -> None:
    """Drop the database ``name``, ending the sessions still connected to it."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def seal_template(admin_url: str, name: str) -> None:
    """Mark ``name`` as a template and close it to connections.

    CREATE DATABASE ... TEMPLATE fails while anyone is connected to the
    template, so a pool left open by the migration (or a test that connects
    to the template by mistake) would break every later test.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        # CREATE DATABASE waits a few seconds for terminated sessions to exit.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
