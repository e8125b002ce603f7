"""The durable store on PostgreSQL (psycopg 3 with a connection pool).

Every transaction runs at SERIALIZABLE, the level CockroachDB always uses; the
statements are those of :mod:`agentmem.store.sql`, which keep to SQL that
CockroachDB also speaks (checked here against PostgreSQL only). One database
serves many clusters: each cluster has its own schema.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import psycopg
import psycopg_pool
from psycopg import IsolationLevel, errors

from agentmem.store.ports import StoreUnavailableError
from agentmem.store.sql import RetryableTransactionError, Session, SqlStore

SCHEMA_PATTERN: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: SQLSTATEs of a transaction that may succeed when run again.
_RETRY: Final = (errors.SerializationFailure, errors.DeadlockDetected)


def schema_name(namespace: str, cluster: str) -> str:
    """The default schema of a cluster: ``agentmem_<namespace>_<cluster>``."""
    name = re.sub(r"[^a-z0-9_]", "_", f"agentmem_{namespace}_{cluster}".lower())
    return name[:63]


class _PgSession:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.encode(), params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.encode(), params)


class PostgresStore(SqlStore):
    lock_clause = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        schema: str,
        pool_size: int = 4,
        timeout: float = 10.0,
        connect_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not SCHEMA_PATTERN.match(schema):
            raise ValueError(
                f"store schema {schema!r} must be 1-63 lower-case letters, digits or '_', "
                "not starting with a digit"
            )
        self.schema = schema
        self.prefix = f'"{schema}".'
        self.name = f"the durable store (PostgreSQL schema {schema})"
        self.timeout = timeout
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True, "connect_timeout": int(timeout), **(connect_kwargs or {})},
            configure=_configure,
            open=False,
            timeout=timeout,
            name=f"agentmem-{schema}",
        )
        self._pool.open(wait=False)

    @contextlib.contextmanager
    def _session(self, write: bool) -> Iterator[Session]:
        try:
            with self._pool.connection() as conn:
                conn.read_only = not write
                with conn.transaction():
                    yield _PgSession(conn)
        except _RETRY as exc:
            raise RetryableTransactionError(str(exc)) from exc
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailableError(f"{self.name} is unreachable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreUnavailableError(f"{self.name} failed: {exc}") from exc

    def _create_schema(self) -> None:
        with self._session(write=True) as s:
            s.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def close(self) -> None:
        self._pool.close()


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.isolation_level = IsolationLevel.SERIALIZABLE
