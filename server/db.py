"""Database engines, sessions and schema migrations.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Write
transactions on SQLite start with ``BEGIN IMMEDIATE``, so two writers never
both read and then fail to upgrade their lock. On PostgreSQL they run at READ
COMMITTED and lock the rows they change (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """An engine with two session factories: ``read()`` and ``write()``."""

    def __init__(self, url: str, **engine_options):
        self.url = url
        self.engine = create_engine(url, **engine_options)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(sshca_write=True), expire_on_commit=False)

    def read(self) -> Session:
        """Return a session for queries only."""
        return self._read()

    def write(self) -> Session:
        """Return a session whose transaction takes the write lock first on SQLite."""
        return self._write()

    def dispose(self) -> None:
        self.engine.dispose()


def create_engine(url: str, **options) -> sa.Engine:
    """Create an engine for ``url``, with the SQLite settings described above."""
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = sa.create_engine(url, **options)
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine

    options.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **options)


def _sqlite_connect(dbapi_connection, connection_record):
    # Let SQLAlchemy's "begin" event issue BEGIN, instead of the driver's own
    # deferred BEGIN, so write transactions can ask for BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection):
    if connection.get_execution_options().get("sshca_write"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def alembic_config(url: str):
    """Return an Alembic configuration for the migrations shipped in server/migrations."""
    # Imported here: the service itself never migrates, and Alembic is slow to import.
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(resources.files("server") / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``."""
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """Return the schema revision of the database at ``url``, or None when it has none."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
