"""Where decision records live: one SQL store over SQLite (default, WAL) or PostgreSQL.

A `SQLStore` is used from one thread at a time: the background writer owns one, and each report
opens its own (SQLite in WAL mode and PostgreSQL both let readers run beside the writer).
psycopg is imported only when a `postgresql://` URL is configured.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .schema import (
    FEEDBACK_SQL,
    MIGRATIONS,
    POSTGRES,
    SCHEMA_VERSION,
    SQLITE,
    Dialect,
    arm_insert_sql,
    insert_sql,
)


class StoreError(Exception):
    """The store cannot be opened, migrated or written; the message names the store."""


class SQLStore:
    """DB-API connection + dialect. Every public call is one transaction."""

    def __init__(self, conn: Any, dialect: Dialect, where: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.where = where
        self._insert = insert_sql(dialect)
        self._arms = arm_insert_sql(dialect)
        self._feedback = dialect.sql(FEEDBACK_SQL)

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in the database."""
        cur = self.conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT MAX(version) FROM schema_version")
        row = cur.fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > SCHEMA_VERSION:
            self.conn.rollback()
            raise StoreError(f"{self.where}: schema version {version} is newer than this "
                             f"gateway's {SCHEMA_VERSION}; upgrade the gateway")
        self.conn.commit()
        for target in sorted(v for v in MIGRATIONS if v > version):
            for statement in MIGRATIONS[target]:
                cur.execute(self.dialect.sql(statement))
            cur.execute(self.dialect.sql("INSERT INTO schema_version (version) VALUES (?)"),
                        (target,))
            self.conn.commit()
            version = target
        return version

    def write(self, rows: Sequence[tuple[Any, ...]], arms: Sequence[tuple[Any, ...]]) -> None:
        try:
            cur = self.conn.cursor()
            if rows:
                cur.executemany(self._insert, rows)
            if arms:
                cur.executemany(self._arms, arms)
            self.conn.commit()
        except BaseException:
            _rollback(self.conn)
            raise

    def feedback(self, request_id: str, score: float, comment: str | None) -> bool:
        try:
            cur = self.conn.cursor()
            cur.execute(self._feedback, (score, comment, time.time(), request_id))
            found = bool(cur.rowcount > 0)
            self.conn.commit()
            return found
        except BaseException:
            _rollback(self.conn)
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.execute(self.dialect.sql(sql), tuple(params))
        rows = [tuple(r) for r in cur.fetchall()]
        self.conn.commit()  # end the read transaction (PostgreSQL would keep its snapshot)
        return rows

    def delete_before(self, ts: float) -> int:
        cur = self.conn.cursor()
        cur.execute(self.dialect.sql("DELETE FROM decisions WHERE ts < ?"), (ts,))
        removed = int(cur.rowcount or 0)
        cur.execute(self.dialect.sql("DELETE FROM arm_totals WHERE ts < ?"), (ts,))
        self.conn.commit()
        return removed

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


def _rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the connection is already gone
        pass


def is_postgres(target: str) -> bool:
    """Whether `target` names a PostgreSQL database (else it is a SQLite path)."""
    return target.startswith(("postgresql://", "postgres://"))


def describe(url: str) -> str:
    """A store's name for messages: never the password of a database URL."""
    if is_postgres(url):
        scheme, _, rest = url.partition("://")
        creds, at, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':')[0] + '@' if at else ''}{host}"
    return url


def open_store(target: str, connect_timeout_s: float = 3.0) -> SQLStore:
    """A migrated store for a SQLite path or a `postgresql://` URL."""
    where = describe(target)
    try:
        if is_postgres(target):
            import psycopg

            conn: Any = psycopg.connect(target, connect_timeout=max(1, int(connect_timeout_s)))
            store = SQLStore(conn, POSTGRES, where)
        else:
            path = Path(target)
            if path.parent and not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=connect_timeout_s,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            store = SQLStore(conn, SQLITE, where)
        store.migrate()
        return store
    except StoreError:
        raise
    except ImportError:
        raise StoreError(f"{where}: PostgreSQL needs psycopg 3 (pip install 'psycopg[binary]')") \
            from None
    except Exception as exc:  # noqa: BLE001 - sqlite3/psycopg errors, named by class only
        raise StoreError(f"{where}: cannot open the decision log ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
